//! The `tpm2` key provider: the key that seals the key journal lives in a TPM 2.0 NV index, not
//! on the footage card (ring-buffer.md, "Key providers"). It is made on the TPM's first use from
//! the operating system's random source, written and read over pipes (never to a file), and
//! destroyed by undefining the index, after which the journals left on flash can never be opened
//! again (design case (c) met, unlike `credential` and `otp`).
//!
//! The TPM is driven through tpm2-tools (the TSS's own command-line tools, Debian `tpm2-tools`)
//! with the TCTI the board profile names, by default `device:/dev/tpmrm0` (the kernel's resource
//! manager). Tests use a software TPM (swtpm) through `swtpm:host=127.0.0.1,port=N`.
//!
//! What it does not defend: a thief with the whole running box, or one who boots the stolen box
//! into their own system, can read an owner-readable NV index (no PCR policy binds it to Vakt's
//! boot chain; that needs measured boot on the board, ring-buffer.md open question 3).

use std::io::Write;
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use crate::StoreError;
use crate::keys::{Key, KeyProvider, random_key};

/// The NV index Vakt uses (owner range 0x0180_0000..0x01BF_FFFF, TCG "Registry of Reserved TPM
/// 2.0 Handles and Localities": unassigned for platform and vendor use).
pub const DEFAULT_NV_INDEX: u32 = 0x0180_0A4B;

pub struct Tpm2Provider {
    key: Key,
    tcti: String,
    index: u32,
    /// The index was defined by this open (first use of this TPM).
    pub created: bool,
}

fn tpm_error(what: String) -> StoreError {
    StoreError::Key { what }
}

impl Tpm2Provider {
    /// Opens the key in NV `index` of the TPM behind `tcti`; defines and fills the index first if
    /// the TPM has none.
    pub fn open(tcti: &str, index: u32) -> Result<Tpm2Provider, StoreError> {
        let handles = run(tcti, "tpm2_getcap", &["handles-nv-index"], None)?;
        let exists = String::from_utf8_lossy(&handles)
            .lines()
            .filter_map(|l| l.trim().trim_start_matches("- ").trim().strip_prefix("0x"))
            .any(|h| u32::from_str_radix(h, 16) == Ok(index));
        let idx = format!("0x{index:08X}");
        let mut created = false;
        let mut fresh = None;
        if !exists {
            let key = random_key();
            run(tcti, "tpm2_nvdefine", &[&idx, "-C", "o", "-s", "32", "-a", "ownerread|ownerwrite"], None)?;
            run(tcti, "tpm2_nvwrite", &[&idx, "-C", "o", "-i", "-"], Some(&key[..]))?;
            tracing::info!(nv_index = %idx, "footage journal key made in the TPM (first use of this TPM)");
            created = true;
            fresh = Some(key);
        }
        let out = Zeroizing::new(run(tcti, "tpm2_nvread", &[&idx, "-C", "o", "-s", "32"], None)?);
        let bytes: [u8; 32] = out
            .as_slice()
            .try_into()
            .map_err(|_| tpm_error(format!("TPM NV index {idx} holds {} bytes, not a 32-byte key", out.len())))?;
        let key = Zeroizing::new(bytes);
        if let Some(f) = fresh
            && f != key
        {
            return Err(tpm_error(format!("TPM NV index {idx}: the key read back differs from the key written")));
        }
        Ok(Tpm2Provider { key, tcti: tcti.to_string(), index, created })
    }
}

impl KeyProvider for Tpm2Provider {
    fn protection(&self) -> &'static str {
        "tpm2"
    }
    fn journal_key(&self) -> Option<&Key> {
        Some(&self.key)
    }
    fn destroy(&mut self) -> Vec<String> {
        let idx = format!("0x{:08X}", self.index);
        match run(&self.tcti, "tpm2_nvundefine", &[&idx, "-C", "o"], None) {
            Ok(_) => vec![format!(
                "the journal key in TPM 2.0 NV index {idx} (undefined: journals left on flash can never be opened)"
            )],
            Err(e) => vec![format!("NOT destroyed: the journal key in TPM 2.0 NV index {idx}: {e}")],
        }
    }
}

/// Runs one tpm2-tools command; its stdout, or an error with the tool's own message.
fn run(tcti: &str, tool: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, StoreError> {
    let mut child = Command::new(tool)
        .args(args)
        .env("TPM2TOOLS_TCTI", tcti)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            tpm_error(if e.kind() == std::io::ErrorKind::NotFound {
                format!("the tpm2 key provider needs {tool} from tpm2-tools, which is not installed (apt install tpm2-tools)")
            } else {
                format!("cannot run {tool}: {e}")
            })
        })?;
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(data).map_err(|e| tpm_error(format!("{tool}: cannot write to its input: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| tpm_error(format!("{tool}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| l.starts_with("ERROR")).or_else(|| err.lines().last()).unwrap_or("");
        return Err(tpm_error(format!("{tool} (TCTI {tcti}) failed ({}): {}", out.status, last.trim())));
    }
    Ok(out.stdout)
}

#[cfg(feature = "swtpm")]
mod soft {
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A swtpm on free loopback ports with its state in `dir`; killed on drop.
    pub struct SoftTpm {
        child: Child,
        /// The TCTI that reaches it.
        pub tcti: String,
    }

    impl SoftTpm {
        pub fn start(dir: &Path) -> SoftTpm {
            for _ in 0..20 {
                let port = {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    l.local_addr().unwrap().port()
                };
                if port == u16::MAX || std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
                    continue;
                }
                let child = Command::new("swtpm")
                    .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
                    .arg("--server")
                    .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                    .arg("--ctrl")
                    .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                    .arg("--tpmstate")
                    .arg(format!("dir={}", dir.display()))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("swtpm (apt install swtpm; deploy/setup-dev.sh installs it)");
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                        return SoftTpm { child, tcti: format!("swtpm:host=127.0.0.1,port={port}") };
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let mut c = child;
                let _ = c.kill();
            }
            panic!("swtpm did not start");
        }
    }

    impl Drop for SoftTpm {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A software TPM for tests (feature `swtpm`).
#[cfg(feature = "swtpm")]
pub use soft::SoftTpm;

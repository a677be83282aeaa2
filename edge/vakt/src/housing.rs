//! The enclosure's tamper switch: a digital input read through the Linux GPIO character device,
//! debounced, reported as `housing_opened`. Design: `edge/docs/design/tamper.md` ("Enclosure
//! switch"). The input sits behind `DigitalInput` so the debouncer is tested with a scripted
//! input: the development machines have no GPIO.

use std::time::Duration;

use anyhow::Context;

use vakt_core::config::HousingConfig;

/// A two-level input: `true` when the housing is open.
pub trait DigitalInput: Send {
    fn read_open(&mut self) -> std::io::Result<bool>;
}

/// A GPIO line requested as an input on a character device (`/dev/gpiochipN`).
pub struct GpioInput {
    request: gpiocdev::Request,
    line: u32,
    open_when_high: bool,
}

impl GpioInput {
    pub fn open(cfg: &HousingConfig) -> anyhow::Result<Self> {
        let request = gpiocdev::Request::builder()
            .on_chip(&cfg.chip)
            .with_consumer("vakt-housing")
            .with_line(cfg.line)
            .as_input()
            .request()
            .with_context(|| {
                format!(
                    "cannot open GPIO line {} on {} for the housing switch; check [tamper.housing] and the board profile",
                    cfg.line,
                    cfg.chip.display()
                )
            })?;
        Ok(GpioInput { request, line: cfg.line, open_when_high: cfg.open_when_high })
    }
}

impl DigitalInput for GpioInput {
    fn read_open(&mut self) -> std::io::Result<bool> {
        let v = self.request.value(self.line).map_err(std::io::Error::other)?;
        let high = v == gpiocdev::line::Value::Active;
        Ok(high == self.open_when_high)
    }
}

/// Debounces an input: a new level counts once it has held for `debounce`. A read that fails is
/// taken as "open" (fail closed: a cut or shorted wire must not hide an opened housing).
pub struct Debouncer<I: DigitalInput> {
    input: I,
    debounce: Duration,
    state: bool,
    candidate: Option<(bool, Duration)>,
    read_errors: u64,
}

impl<I: DigitalInput> Debouncer<I> {
    pub fn new(input: I, debounce: Duration) -> Self {
        Debouncer { input, debounce, state: false, candidate: None, read_errors: 0 }
    }

    /// Polls at time `now` (any monotonic clock); returns the new state when it changes.
    pub fn poll(&mut self, now: Duration) -> Option<bool> {
        let level = match self.input.read_open() {
            Ok(v) => v,
            Err(e) => {
                self.read_errors += 1;
                if self.read_errors == 1 {
                    tracing::error!(error = %e, "cannot read the housing switch: treating the housing as open");
                }
                true
            }
        };
        if level == self.state {
            self.candidate = None;
            return None;
        }
        match self.candidate {
            Some((l, since)) if l == level => {
                if now.saturating_sub(since) >= self.debounce {
                    self.state = level;
                    self.candidate = None;
                    return Some(level);
                }
            }
            _ => self.candidate = Some((level, now)),
        }
        if self.debounce.is_zero() {
            self.state = level;
            self.candidate = None;
            return Some(level);
        }
        None
    }
}

/// Polls the switch on its own thread every 50 ms until `stop`; sends each debounced change.
pub fn spawn_monitor(
    input: Box<dyn DigitalInput>,
    debounce: Duration,
    tx: crossbeam_channel::Sender<bool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    struct Boxed(Box<dyn DigitalInput>);
    impl DigitalInput for Boxed {
        fn read_open(&mut self) -> std::io::Result<bool> {
            self.0.read_open()
        }
    }
    std::thread::Builder::new().name("housing".into()).spawn(move || {
        let start = std::time::Instant::now();
        let mut d = Debouncer::new(Boxed(input), debounce);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(open) = d.poll(start.elapsed())
                && tx.send(open).is_err()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted input: one reading per poll; `None` is a read error.
    struct Script(std::vec::IntoIter<Option<bool>>);

    /// (what, readings every 50 ms, debounce ms, expected changes as (ms, open)).
    type Case = (&'static str, Vec<Option<bool>>, u64, Vec<(u64, bool)>);

    impl DigitalInput for Script {
        fn read_open(&mut self) -> std::io::Result<bool> {
            match self.0.next().flatten() {
                Some(v) => Ok(v),
                None => Err(std::io::Error::other("line gone")),
            }
        }
    }

    fn run(readings: Vec<Option<bool>>, debounce_ms: u64) -> Vec<(u64, bool)> {
        let n = readings.len() as u64;
        let mut d = Debouncer::new(Script(readings.into_iter()), Duration::from_millis(debounce_ms));
        (0..n).filter_map(|i| d.poll(Duration::from_millis(i * 50)).map(|s| (i * 50, s))).collect()
    }

    #[test]
    fn table() {
        let (c, o, e) = (Some(false), Some(true), None);
        let cases: Vec<Case> = vec![
            ("closed stays quiet", vec![c; 10], 200, vec![]),
            ("a 100 ms bounce is ignored", vec![c, o, o, c, c, c, c], 200, vec![]),
            ("opened for good, reported after the debounce", vec![c, o, o, o, o, o, o, o], 200, vec![(250, true)]),
            (
                "opened then closed again",
                vec![c, o, o, o, o, o, c, c, c, c, c, c],
                200,
                vec![(250, true), (500, false)],
            ),
            ("no debounce reports at once", vec![c, o, c], 0, vec![(50, true), (100, false)]),
            ("an unreadable line fails closed (open)", vec![c, e, e, e, e, e, e], 200, vec![(250, true)]),
        ];
        for (what, r, db, want) in cases {
            assert_eq!(run(r, db), want, "{what}");
        }
    }
}

//! The signed-command envelope's structure (edge/docs/design/commands.md, check 1): parsing only,
//! no keys, no clock, no state, so that it can be fuzzed (edge/fuzz). The box's checks that need
//! keys, time and the nonce store follow in `vakt`'s `commands.rs`.

use serde_json::{Map, Value};

/// A structurally valid envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub box_id: String,
    pub cmd: String,
    pub args: Value,
    pub issuer: String,
    pub nonce: String,
    pub expires: String,
    /// `sig` as sent (None: absent; Some(Err) when not a string).
    pub sig: Option<Result<String, ()>>,
    /// The object without `sig`: what the signature covers (canonicalised by the verifier).
    pub signed_part: Value,
}

/// Why an envelope is malformed, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

const FIELDS: [&str; 8] = ["v", "box", "cmd", "args", "issuer", "nonce", "expires", "sig"];

pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, Malformed> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| Malformed(format!("not JSON ({e})")))?;
    let Value::Object(obj) = v else { return Err(Malformed("not a JSON object".into())) };
    for k in ["v", "box", "cmd", "issuer", "nonce", "expires"] {
        if !obj.contains_key(k) {
            return Err(Malformed(format!("missing field `{k}`")));
        }
    }
    if let Some(extra) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Malformed(format!("unknown field `{extra}`")));
    }
    if obj["v"] != 1 {
        return Err(Malformed(format!("`v` = {}: this box understands version 1", obj["v"])));
    }
    let s = |k: &str| obj[k].as_str().map(str::to_string).ok_or_else(|| Malformed(format!("`{k}` is not a string")));
    let (box_id, cmd, issuer, nonce, expires) = (s("box")?, s("cmd")?, s("issuer")?, s("nonce")?, s("expires")?);
    let sig = obj.get("sig").map(|v| v.as_str().map(str::to_string).ok_or(()));
    let mut signed: Map<String, Value> = obj.clone();
    signed.remove("sig");
    Ok(Envelope {
        box_id,
        cmd,
        args: obj.get("args").cloned().unwrap_or(Value::Null),
        issuer,
        nonce,
        expires,
        sig,
        signed_part: Value::Object(signed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_envelopes_name_the_field() {
        let e = |s: &str| parse_envelope(s.as_bytes()).unwrap_err().0;
        assert!(e("[1]").contains("not a JSON object"));
        assert!(e("{").contains("not JSON"));
        assert!(e(r#"{"v":1}"#).contains("`box`"));
        let good = r#"{"v":1,"box":"b","cmd":"holds","issuer":"i","nonce":"n","expires":"x"}"#;
        assert!(parse_envelope(good.as_bytes()).is_ok());
        assert!(e(&good.replace("\"v\":1", "\"v\":2")).contains("version 1"));
        assert!(e(&good.replace("\"cmd\":\"holds\"", "\"cmd\":7")).contains("`cmd` is not a string"));
        assert!(e(&good.replace("}", ",\"x\":0}")).contains("unknown field `x`"));
        let with_sig = parse_envelope(good.replace("}", ",\"sig\":\"ab\"}").as_bytes()).unwrap();
        assert_eq!(with_sig.sig, Some(Ok("ab".into())));
        assert!(with_sig.signed_part.get("sig").is_none());
    }
}

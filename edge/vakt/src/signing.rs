//! Signed events (edge/docs/design/delivery.md, "Signed events"): each message on the events
//! topic carries `sig`, the box's Ed25519 signature over the RFC 8785 (JCS) canonical JSON of the
//! message without `sig`. A consumer parses the message, removes `sig`, canonicalises what is
//! left with any RFC 8785 implementation, and verifies with the box's public key
//! (`identity/signing.pub`).

use serde::Serialize;
use serde_json::Value;

use vakt_core::event::Event;
use vakt_identity::Identity;

/// The RFC 8785 canonical bytes of a JSON value.
pub fn canonical(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, canon_json::CanonicalFormatter::new());
    v.serialize(&mut ser).expect("a JSON value serialises");
    buf
}

/// The message for the events topic: signed when the box has an identity.
pub fn payload(e: &Event, identity: Option<&Identity>) -> Vec<u8> {
    let Some(id) = identity else { return serde_json::to_vec(e).expect("serialisable") };
    let mut v = serde_json::to_value(e).expect("serialisable");
    if let Value::Object(m) = &mut v {
        m.remove("sig");
    }
    let sig = hex::encode(id.sign(&canonical(&v)));
    if let Value::Object(m) = &mut v {
        m.insert("sig".into(), Value::String(sig));
    }
    serde_json::to_vec(&v).expect("serialisable")
}

/// Why a message did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    Unsigned,
    BadSignature,
    NotJson,
}

/// Verifies a message against any of `keys` (PEM public keys); returns the parsed message.
pub fn verify(payload: &[u8], keys: &[String]) -> (Verdict, Option<Value>) {
    let Ok(mut v) = serde_json::from_slice::<Value>(payload) else { return (Verdict::NotJson, None) };
    let sig = match v.as_object_mut().and_then(|m| m.remove("sig")) {
        Some(Value::String(s)) => s,
        _ => return (Verdict::Unsigned, Some(v)),
    };
    let Ok(sig) = hex::decode(&sig) else { return (Verdict::BadSignature, Some(v)) };
    let msg = canonical(&v);
    let ok = keys.iter().any(|k| vakt_identity::verify_signature(k, &msg, &sig).is_ok());
    (if ok { Verdict::Verified } else { Verdict::BadSignature }, Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_sorts_keys_and_drops_whitespace() {
        let v: Value = serde_json::from_str(r#"{ "b": [1, 2.5, "x"], "a": {"z": null, "y": true} }"#).unwrap();
        assert_eq!(canonical(&v), br#"{"a":{"y":true,"z":null},"b":[1,2.5,"x"]}"#);
    }

    #[test]
    fn a_signed_message_verifies_and_any_change_breaks_it() {
        let dir = tempfile::tempdir().unwrap();
        Identity::provision(dir.path(), "box-1", false).unwrap();
        let id = Identity::load(dir.path()).unwrap();
        let pem = id.public_key_pem().unwrap();
        let e: Event = serde_json::from_str(
            r#"{"v":1,"id":"01J","box":"box-1","site":"s","camera":"c","kind":"motion","phase":"start","zone":"z",
                "started_at":"2026-11-23T08:00:00.000Z","ended_at":null,"at":"2026-11-23T08:00:00.000Z","seq":7,"boot":2,
                "bbox":[0.1,0.2,0.3,0.4],"area":0.12,"media_time_s":1.5,"onset_media_time_s":1.0,"attrs":{"blobs":1}}"#,
        )
        .unwrap();
        let p = payload(&e, Some(&id));
        assert_eq!(verify(&p, std::slice::from_ref(&pem)).0, Verdict::Verified);
        // key order and whitespace do not matter: the verifier canonicalises
        let reordered = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&p).unwrap()).unwrap();
        assert_eq!(verify(&reordered, std::slice::from_ref(&pem)).0, Verdict::Verified);
        let forged = String::from_utf8(p.clone()).unwrap().replace("\"seq\":7", "\"seq\":8");
        assert_eq!(verify(forged.as_bytes(), std::slice::from_ref(&pem)).0, Verdict::BadSignature);
        assert_eq!(verify(&serde_json::to_vec(&e).unwrap(), std::slice::from_ref(&pem)).0, Verdict::Unsigned);
        let other = tempfile::tempdir().unwrap();
        Identity::provision(other.path(), "box-2", false).unwrap();
        let other_pem = Identity::load(other.path()).unwrap().public_key_pem().unwrap();
        assert_eq!(verify(&p, &[other_pem]).0, Verdict::BadSignature);
    }
}

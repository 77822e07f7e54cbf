//! Invoice payloads: what an invoice says it sells, to whom, at what price, signed so that a
//! payload vitte did not write is recognised.
//!
//! `p1.{product}.{user}.{stars}.{signature}`: the signature is the first 16 bytes of
//! HMAC-SHA256 over the rest, in hex, keyed with `payments.payload_secret`. At most
//! 3 + 24 + 20 + 5 + 32 + 4 = 88 bytes (Telegram allows 128).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::ports::UserId;

/// What an invoice is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePayload {
    pub product_id: String,
    pub user_id: UserId,
    pub stars: u32,
}

/// Why a payload is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is not one of ours")]
    Malformed,
    #[error("the payload's signature is wrong (forged or altered)")]
    Forged,
}

/// Signs and checks payloads with the bot's secret.
#[derive(Clone)]
pub struct PayloadSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for PayloadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PayloadSigner([redacted])")
    }
}

const VERSION: &str = "p1";

impl PayloadSigner {
    pub fn new(key: &[u8]) -> PayloadSigner {
        PayloadSigner { key: key.to_vec() }
    }

    /// A key derived from the bot token (when no `payments.payload_secret` is set): the
    /// token itself never signs anything.
    pub fn derive_key(bot_token: &str) -> Vec<u8> {
        use sha2::Digest;
        let mut hasher = Sha256::new();
        hasher.update(b"vitte invoice payloads\0");
        hasher.update(bot_token.as_bytes());
        hasher.finalize().to_vec()
    }

    fn signature(&self, body: &str) -> String {
        // HMAC takes a key of any length.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(body.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The payload of an invoice for `payload`.
    pub fn sign(&self, payload: &InvoicePayload) -> String {
        let body = format!(
            "{VERSION}.{}.{}.{}",
            payload.product_id, payload.user_id, payload.stars
        );
        let signature = self.signature(&body);
        format!("{body}.{signature}")
    }

    /// What a payload says, if vitte wrote it.
    pub fn verify(&self, text: &str) -> Result<InvoicePayload, PayloadError> {
        let (body, signature) = text.rsplit_once('.').ok_or(PayloadError::Malformed)?;
        let mut fields = body.split('.');
        let (Some(VERSION), Some(product_id), Some(user), Some(stars), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(PayloadError::Malformed);
        };
        let payload = InvoicePayload {
            product_id: product_id.to_owned(),
            user_id: user.parse().map_err(|_| PayloadError::Malformed)?,
            stars: stars.parse().map_err(|_| PayloadError::Malformed)?,
        };
        let expected = self.signature(body);
        // Constant-time comparison of the hex strings.
        let same = expected.len() == signature.len()
            && expected
                .bytes()
                .zip(signature.bytes())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0;
        if !same {
            return Err(PayloadError::Forged);
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> InvoicePayload {
        InvoicePayload {
            product_id: "month".into(),
            user_id: 42,
            stars: 450,
        }
    }

    #[test]
    fn a_signed_payload_is_read_back_and_fits_telegrams_128_bytes() {
        let signer = PayloadSigner::new(b"secret");
        let longest = InvoicePayload {
            product_id: "z".repeat(24),
            user_id: i64::MIN,
            stars: 10_000,
        };
        for payload in [payload(), longest] {
            let text = signer.sign(&payload);
            assert!(text.len() <= 128, "{}", text.len());
            assert_eq!(signer.verify(&text), Ok(payload));
        }
    }

    #[test]
    fn altered_foreign_and_garbage_payloads_are_refused() {
        let signer = PayloadSigner::new(b"secret");
        let text = signer.sign(&payload());
        let cheaper = text.replace(".450.", ".1.");
        assert_eq!(signer.verify(&cheaper), Err(PayloadError::Forged));
        let someone_else = text.replace(".42.", ".43.");
        assert_eq!(signer.verify(&someone_else), Err(PayloadError::Forged));
        let other_bot = PayloadSigner::new(b"another").sign(&payload());
        assert_eq!(signer.verify(&other_bot), Err(PayloadError::Forged));
        for garbage in [
            "",
            "p1",
            "p1.month.42.450",
            "x.month.42.450.00",
            "p1.month.me.450.00",
        ] {
            assert_eq!(
                signer.verify(garbage),
                Err(PayloadError::Malformed),
                "{garbage}"
            );
        }
    }
}

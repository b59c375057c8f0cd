//! Sealing TLS 1.3 records straight into one reusable output buffer: one
//! copy of the plaintext (into the buffer), AEAD in place, no allocation per
//! record. rustls' `MessageEncrypter` allocates and fills a fresh buffer per
//! record, which cost more than the AES itself on the send path.

use std::io;

#[cfg(feature = "aws-lc")]
use aws_lc_rs::aead;
#[cfg(all(feature = "ring", not(feature = "aws-lc")))]
use ring::aead;
use rustls::ConnectionTrafficSecrets;

const HEADER: usize = 5;
const TAG: usize = 16;

pub(crate) struct Sealer {
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
}

impl Sealer {
    pub(crate) fn new(secrets: &ConnectionTrafficSecrets) -> io::Result<Self> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(io::Error::other("unsupported TLS 1.3 cipher suite")),
        };
        let key = aead::UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| io::Error::other("invalid TLS traffic key"))?;
        let iv: [u8; aead::NONCE_LEN] = iv
            .as_ref()
            .try_into()
            .map_err(|_| io::Error::other("invalid TLS traffic IV"))?;
        Ok(Self {
            key: aead::LessSafeKey::new(key),
            iv,
        })
    }

    /// Appends one record carrying `payload` (concatenated slices, at most
    /// 2^14 bytes) with inner content type `typ` to `out`.
    pub(crate) fn seal(
        &self,
        seq: u64,
        typ: u8,
        payload: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let plain_len: usize = payload.iter().map(|s| s.len()).sum();
        let record_len = plain_len + 1 + TAG;
        let len =
            u16::try_from(record_len).map_err(|_| io::Error::other("TLS record too large"))?;
        let header = [0x17, 0x03, 0x03, (len >> 8) as u8, len as u8];
        out.reserve(HEADER + record_len);
        out.extend_from_slice(&header);
        let start = out.len();
        for slice in payload {
            out.extend_from_slice(slice);
        }
        out.push(typ);
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        let tag = self
            .key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(header),
                &mut out[start..],
            )
            .map_err(|_| io::Error::other("TLS record sealing failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

/// Benchmark hook for `meshbench crypto`: seals 16 KiB records with
/// AES-128-GCM for `window` and returns Gbit/s of plaintext.
#[doc(hidden)]
pub fn measure_seal_gbps(window: std::time::Duration) -> f64 {
    let Ok(key) = aead::UnboundKey::new(&aead::AES_128_GCM, &[7; 16]) else {
        return f64::NAN;
    };
    let sealer = Sealer {
        key: aead::LessSafeKey::new(key),
        iv: [9; aead::NONCE_LEN],
    };
    let payload = vec![0x42_u8; 16 * 1024];
    let mut out = Vec::with_capacity(32 * 1024);
    let start = std::time::Instant::now();
    let mut seq = 0_u64;
    while start.elapsed() < window {
        out.clear();
        if sealer.seal(seq, 23, &[&payload], &mut out).is_err() {
            return f64::NAN;
        }
        seq += 1;
    }
    (seq * payload.len() as u64) as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

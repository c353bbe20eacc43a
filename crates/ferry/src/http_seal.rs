//! Sealed bodies (docs/HTTP.md §11) between the signed-body layer and the data: the
//! streaming opener both ends use, holding at most one sealed chunk, so memory does not grow
//! with a body. The constructions are `ferry_proto::http::seal`'s.

use ferry_proto::http::seal::{SealError, Unsealed};

/// The random number generator sealing draws from.
pub(crate) fn rng() -> impl rand_core_10::CryptoRng {
    rand_core_10::UnwrapErr(getrandom_04::SysRng)
}

/// Opens a sealed body fed in pieces as they arrive.
#[derive(Default)]
pub(crate) struct Unsealing {
    pending: Vec<u8>,
    finished: bool,
}

impl Unsealing {
    /// Feeds `data`; returns the plaintext of every chunk it completed.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        mut decode: impl FnMut(&[u8]) -> Result<Option<(Unsealed, usize)>, SealError>,
    ) -> Result<Vec<u8>, SealError> {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        let mut plain = Vec::new();
        while let Some((step, used)) = decode(&self.pending[start..])? {
            start += used;
            match step {
                Unsealed::Start => {}
                Unsealed::Data(d) => plain.extend_from_slice(&d),
                Unsealed::End(d) => {
                    plain.extend_from_slice(&d);
                    self.finished = true;
                }
            }
        }
        self.pending.drain(..start);
        Ok(plain)
    }

    /// At the body's end: `Err` unless the final chunk opened and nothing followed it.
    pub(crate) fn end(&self) -> Result<(), SealError> {
        if self.finished && self.pending.is_empty() {
            Ok(())
        } else {
            Err(SealError::Open)
        }
    }
}

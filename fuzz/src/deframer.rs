//! `grpc_deframer`: [`Deframer`] fed arbitrary chunks, against a reference
//! model that parses the concatenation of everything pushed so far.
//!
//! Input: `[limit selector][chunking seed] stream bytes...`.
//!
//! After every drain (`next_message` until `Ok(None)` or an error; drains
//! happen after some pushes, chosen by the seed, and at the end) the
//! messages returned so far, the error if any, `buffered()` and `finish()`
//! must be exactly what the model says for the bytes pushed so far, and no
//! message may exceed the limit.

use bytes::Bytes;
use crisp_core::grpc::codec::{DeframeError, Deframer, Message, PREFIX_LEN};

use crate::util::{chunks, Rng};

const LIMITS: [usize; 8] = [0, 1, 5, 16, 100, 1000, 65_536, 16 * 1024 * 1024];

/// Where the model stopped.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Waiting for more: `leftover` bytes of an unfinished message;
    /// `expected` its full size once its prefix is complete.
    Pending {
        leftover: usize,
        expected: Option<usize>,
    },
    Failed(DeframeError),
}

/// The simplest reading of the length-prefixed message format.
fn model(stream: &[u8], max: usize) -> (Vec<Message>, End) {
    let mut out = Vec::new();
    let mut rest = stream;
    loop {
        let Some((prefix, body)) = rest.split_first_chunk::<PREFIX_LEN>() else {
            let end = End::Pending {
                leftover: rest.len(),
                expected: None,
            };
            return (out, end);
        };
        let compressed = match prefix[0] {
            0 => false,
            1 => true,
            flag => return (out, End::Failed(DeframeError::InvalidFlag(flag))),
        };
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > max {
            return (out, End::Failed(DeframeError::TooLarge { len, max }));
        }
        if body.len() < len {
            let end = End::Pending {
                leftover: rest.len(),
                expected: Some(PREFIX_LEN + len),
            };
            return (out, end);
        }
        out.push(Message {
            compressed,
            payload: Bytes::copy_from_slice(&body[..len]),
        });
        rest = &body[len..];
    }
}

pub fn grpc_deframer(data: &[u8]) {
    let [ctl, seed, stream @ ..] = data else {
        return;
    };
    let max = LIMITS[usize::from(ctl & 7)];
    let mut rng = Rng::new(u64::from(*seed) | u64::from(*ctl) << 8);
    let parts = chunks(stream, &mut rng);
    let mut d = Deframer::new(max);
    let mut got = Vec::new();
    let mut error = None;
    let mut pushed = 0;
    for (i, part) in parts.iter().enumerate() {
        d.push(Bytes::copy_from_slice(part));
        pushed += part.len();
        let last = i + 1 == parts.len();
        if !last && rng.below(4) == 0 {
            continue; // let chunks queue up before draining
        }
        drain(&mut d, &mut got, &mut error, max);
        check(&d, &got, error, &stream[..pushed], max);
    }
    drain(&mut d, &mut got, &mut error, max);
    check(&d, &got, error, stream, max);
}

fn drain(d: &mut Deframer, got: &mut Vec<Message>, error: &mut Option<DeframeError>, max: usize) {
    loop {
        match d.next_message() {
            Ok(Some(m)) => {
                assert!(m.payload.len() <= max, "message over the limit");
                assert!(error.is_none(), "a message after an error");
                got.push(m);
            }
            Ok(None) => return,
            Err(e) => {
                assert!(error.is_none_or(|prev| prev == e), "error changed");
                *error = Some(e);
                return;
            }
        }
    }
}

fn check(d: &Deframer, got: &[Message], error: Option<DeframeError>, stream: &[u8], max: usize) {
    let (want, end) = model(stream, max);
    assert_eq!(got, &want[..], "messages differ from the model");
    match end {
        End::Pending { leftover, expected } => {
            assert_eq!(error, None);
            assert_eq!(d.buffered(), leftover, "buffered()");
            assert_eq!(d.is_empty(), leftover == 0);
            let finish = if leftover == 0 {
                Ok(())
            } else {
                Err(DeframeError::Truncated {
                    buffered: leftover,
                    expected,
                })
            };
            assert_eq!(d.finish(), finish);
        }
        End::Failed(e) => {
            assert_eq!(error, Some(e));
            assert_eq!(d.finish(), Err(e));
        }
    }
}

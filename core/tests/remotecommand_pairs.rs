//! Port-forward stream pairing (`crisp_core::remotecommand`), which keeps
//! time. (Here rather than in `src/`: an `Instant` needs a clock.)

use std::time::{Duration, Instant};

use crisp_core::remotecommand::*;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn port_forward_pairs() {
    let t0 = Instant::now();
    let mut p = PortForwardPairs::new(Duration::from_secs(30), 8);
    let err = h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]);
    let data = h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]);
    assert_eq!(p.add(1, &err, t0), Ok(None));
    assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    assert_eq!(
        p.add(3, &data, t0),
        Ok(Some(PortForwardPair {
            request_id: "0".into(),
            port: 80,
            data_stream: 3,
            error_stream: 1
        }))
    );
    assert_eq!(p.pending(), 0);
    // Data first works too; a second error stream is a duplicate.
    let d1 = h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "1")]);
    assert_eq!(p.add(5, &d1, t0), Ok(None));
    assert_eq!(
        p.add(7, &d1, t0),
        Err(PairError::Duplicate {
            request_id: "1".into()
        })
    );
    let e1 = h(&[("streamtype", "error"), ("port", "81"), ("requestid", "1")]);
    assert_eq!(
        p.add(9, &e1, t0),
        Err(PairError::PortMismatch {
            request_id: "1".into()
        })
    );
    assert_eq!(p.expire(t0 + Duration::from_secs(29)), Vec::<u32>::new());
    assert_eq!(p.expire(t0 + Duration::from_secs(30)), vec![5]);
    // Bad headers.
    assert!(matches!(
        p.add(1, &h(&[("streamtype", "stdin"), ("port", "80")]), t0),
        Err(PairError::BadStreamType(_))
    ));
    assert!(matches!(
        p.add(1, &h(&[("streamtype", "data"), ("port", "0")]), t0),
        Err(PairError::BadPort(_))
    ));
    assert!(matches!(
        p.add(1, &h(&[("streamtype", "data"), ("port", "x")]), t0),
        Err(PairError::BadPort(_))
    ));
    // Old clients without request ids: error at n, data at n + 2.
    let mut p = PortForwardPairs::new(Duration::from_secs(30), 1);
    assert_eq!(
        p.add(5, &h(&[("streamtype", "error"), ("port", "80")]), t0),
        Ok(None)
    );
    assert_eq!(
        p.add(
            9,
            &h(&[("streamtype", "error"), ("port", "80"), ("requestid", "z")]),
            t0
        ),
        Err(PairError::TooManyPending)
    );
    assert_eq!(
        p.add(7, &h(&[("streamtype", "data"), ("port", "80")]), t0)
            .unwrap()
            .map(|p| (p.data_stream, p.error_stream)),
        Some((7, 5))
    );
}

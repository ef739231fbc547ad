use super::*;

#[test]
fn off_starts_nothing() {
    assert!(matches!(
        Offload::start(KernelOffload::Off, &[], Limits::default()),
        Ok(None)
    ));
}

/// Built without clang (`CLANG=/nonexistent cargo test`): auto says nothing is
/// there, on says why.
#[test]
fn a_build_without_the_program_says_why() {
    if built_with_program() {
        return;
    }
    assert!(matches!(
        Offload::start(KernelOffload::Auto, &[], Limits::default()),
        Ok(None)
    ));
    match Offload::start(KernelOffload::On, &[], Limits::default()) {
        Err(e @ OffloadError::NotBuilt(_)) => {
            assert!(e.to_string().starts_with("built without"), "{e}")
        }
        other => panic!("{:?}", other.map(|o| o.is_some())),
    }
}

#[test]
fn install_checks_what_it_is_given() {
    let ch = OffloadedChannel {
        client: "192.0.2.1:5000".parse().unwrap(),
        server: "198.51.100.1:3478".parse().unwrap(),
        channel: 0x4000,
        relay: "[2001:db8::1]:50000".parse().unwrap(),
        peer: "[2001:db8::2]:6000".parse().unwrap(),
    };
    assert!(matches!(validate(&ch), Err(OffloadError::FamilyMismatch)));
    let ch = OffloadedChannel {
        relay: "198.51.100.1:50000".parse().unwrap(),
        peer: "224.0.0.1:6000".parse().unwrap(),
        ..ch
    };
    assert!(matches!(validate(&ch), Err(OffloadError::NotUnicast(_))));
    // The numbers the server accepts, RFC 5766's range that coturn's clients pick from,
    // and nothing else.
    let ch = OffloadedChannel {
        peer: "198.51.100.2:6000".parse().unwrap(),
        ..ch
    };
    for channel in [0x4000, 0x4fff, 0x5000, 0x7fff] {
        assert!(
            validate(&OffloadedChannel { channel, ..ch }).is_ok(),
            "{channel:#x}"
        );
    }
    for channel in [0x3fff, 0x8000, 0xffff] {
        assert!(
            matches!(
                validate(&OffloadedChannel { channel, ..ch }),
                Err(OffloadError::InvalidChannel(c)) if c == channel
            ),
            "{channel:#x}"
        );
    }
}

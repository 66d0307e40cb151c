//! Key loading and signing checks; the signatures themselves are verified by dkimpy in the
//! end-to-end tests.

use super::*;

#[test]
fn names_refuse_header_breaking_characters() {
    assert_eq!(dns_name("Sel2024").unwrap(), "sel2024");
    assert_eq!(dns_name("mail.Example.com").unwrap(), "mail.example.com");
    for bad in ["", "a;b", "a b", "a\r\nb", "a..b", "ä"] {
        assert!(dns_name(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn der_walk_reads_lengths() {
    // SEQUENCE { INTEGER 0, INTEGER 0x00 0x80 (8 bits) }
    let der = [0x30, 0x07, 0x02, 0x01, 0x00, 0x02, 0x02, 0x00, 0x80];
    assert_eq!(rsa_modulus_bits(&der), Some(8));
    assert_eq!(tlv(&[0x30, 0x05, 0x00]), None, "a length past the end");
}

#[test]
fn a_fold_before_the_closing_semicolon_is_removed() {
    assert_eq!(
        without_fold_before_end("DKIM-Signature: a=1; b=QUJD\r\n\t;\r\n"),
        "DKIM-Signature: a=1; b=QUJD;\r\n"
    );
    let plain = "DKIM-Signature: a=1;\r\n\tb=QUJD;\r\n";
    assert_eq!(without_fold_before_end(plain), plain);
}

#[test]
fn unpaired_flags_are_refused() {
    let args = DkimArgs {
        selectors: vec!["a".into(), "b".into()],
        keys: vec!["k.pem".into()],
        ..Default::default()
    };
    assert!(matches!(
        DkimKeys::load(&args),
        Err(DkimError::Unpaired {
            selectors: 2,
            keys: 1
        })
    ));
}

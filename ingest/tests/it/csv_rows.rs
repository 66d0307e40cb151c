use jetmail_ingest::recipients::{RecipientReader, Row};

fn classify(input: &[u8]) -> Vec<Row> {
    RecipientReader::new(input)
        .expect("readable input")
        .collect()
}

#[test]
fn csv_edge_cases_are_reported_with_their_line_numbers() {
    let mut input = Vec::new();
    input.extend_from_slice(b"\xEF\xBB\xBFemail,name,note\r\n"); // 1: BOM + header
    input.extend_from_slice(b"ann@example.com,Ann,plain\r\n"); // 2
    input.extend_from_slice(b"\r\n"); // 3: blank
    input.extend_from_slice(b"bo@example.com,\"Lee, Bo\",\"two\nlines\"\r\n"); // 4-5
    input.extend_from_slice("josé@exämple.de,José,idn\r\n".as_bytes()); // 6
    input.extend_from_slice("用户@例子.广告,Yonghu,idn\r\n".as_bytes()); // 7
    input.extend_from_slice(b"ANN@example.com,Ann2,case differs in local part\r\n"); // 8
    input.extend_from_slice(b"ann@EXAMPLE.com,Ann3,duplicate (domain case)\r\n"); // 9
    let invalid = [
        "",                          // empty
        "plainaddress",              // no @
        "@example.com",              // empty local part
        "user@",                     // empty domain
        "a@b@example.com",           // two @
        "user@localhost",            // no dot in domain
        "us er@example.com",         // space
        "user@exa_mple.com",         // underscore in domain
        "user@-example.com",         // label starts with -
        "user@example..com",         // empty label
        ".user@example.com",         // leading dot
        "user.@example.com",         // trailing dot
        "us..er@example.com",        // double dot
        "user@[999.1.1.1]",          // bad literal
        "(comment)user@example.com", // comment
        "user@example.com>",         // stray bracket
        "user\"@example.com",        // unbalanced quote
    ];
    for (i, a) in invalid.iter().enumerate() {
        // Quote each so the commas in none of them matter; lines 10..=26.
        input.extend_from_slice(format!("\"{}\",N{i},bad\r\n", a.replace('"', "\"\"")).as_bytes());
    }
    input.extend_from_slice(b"zed@example.com,Zed\r\n"); // 27: too few fields
    input.extend_from_slice(b"last@example.com,Last,ok"); // 28: no final newline

    let rows = classify(&input);
    let accepted: Vec<(u64, String)> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Accepted(a) => Some((a.line, a.email.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        accepted,
        vec![
            (2, "ann@example.com".to_string()),
            (4, "bo@example.com".to_string()),
            (6, "josé@exämple.de".to_string()),
            (7, "用户@例子.广告".to_string()),
            (8, "ANN@example.com".to_string()),
            (28, "last@example.com".to_string()),
        ]
    );
    let bo = rows.iter().find_map(|r| match r {
        Row::Accepted(a) if a.line == 4 => Some(a.clone()),
        _ => None,
    });
    let bo = bo.unwrap();
    assert_eq!(bo.vars["name"], "Lee, Bo");
    assert_eq!(bo.vars["note"], "two\nlines");

    let duplicates: Vec<u64> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Duplicate { line, .. } => Some(*line),
            _ => None,
        })
        .collect();
    assert_eq!(duplicates, vec![9]);

    let rejected: Vec<(u64, String)> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Rejected(r) => Some((r.line, r.reason.clone())),
            _ => None,
        })
        .collect();
    let expected_lines: Vec<u64> = (10..10 + invalid.len() as u64).chain([27]).collect();
    assert_eq!(
        rejected.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        expected_lines,
        "rejected: {rejected:#?}"
    );
    assert!(rejected.iter().all(|(_, reason)| !reason.is_empty()));
    assert!(rejected.last().unwrap().1.contains("expected 3 fields"));
}

#[test]
fn bare_address_lists_work_too() {
    let rows = classify(b"a@example.com\r\n\r\nnot-an-address\nb@example.com\n");
    assert!(matches!(&rows[0], Row::Accepted(a) if a.line == 1));
    assert!(matches!(&rows[1], Row::Rejected(r) if r.line == 3));
    assert!(matches!(&rows[2], Row::Accepted(a) if a.line == 4));
}

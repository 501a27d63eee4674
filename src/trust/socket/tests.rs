use super::*;

#[test]
fn requests_have_a_stable_wire_form() {
    let request = Request {
        v: 1,
        by: "operator:alice".into(),
        op: Op::Fingerprint {
            user: "@a:hs".into(),
            fingerprint: "KEY".into(),
        },
    };
    let line = serde_json::to_string(&request).unwrap();
    assert_eq!(
        line,
        r#"{"v":1,"by":"operator:alice","op":"fingerprint","user":"@a:hs","fingerprint":"KEY"}"#
    );
    assert_eq!(parse_request(&line).unwrap(), request);
    let list: Request = serde_json::from_str(r#"{"v":1,"by":"x","op":"list"}"#).unwrap();
    assert_eq!(list.op, Op::List);
    assert_eq!(
        serde_json::to_string(&Answer::Match).unwrap(),
        r#"{"answer":"match"}"#
    );
}

#[test]
fn another_protocol_version_is_refused_before_anything_runs() {
    let Err(Reply::Done { code, message, .. }) = parse_request(r#"{"v":2,"by":"x","op":"list"}"#)
    else {
        panic!("version 2 accepted");
    };
    assert_eq!(code, CODE_ERROR);
    assert!(message.contains("version 1"), "{message}");
    assert!(matches!(
        parse_request(r#"{"v":1,"by":"x","op":"format-disk"}"#),
        Err(Reply::Done {
            code: CODE_ERROR,
            ..
        })
    ));
    assert!(matches!(
        parse_request("not json"),
        Err(Reply::Done {
            code: CODE_ERROR,
            ..
        })
    ));
}

#[tokio::test]
async fn lines_are_bounded() {
    let long = vec![b'a'; MAX_LINE + 10];
    let mut reader = BufReader::new(long.as_slice());
    assert!(read_line(&mut reader).await.is_err());
    let mut reader = BufReader::new(&b"one\ntwo"[..]);
    assert_eq!(
        read_line(&mut reader).await.unwrap().as_deref(),
        Some("one")
    );
    assert_eq!(
        read_line(&mut reader).await.unwrap().as_deref(),
        Some("two")
    );
    assert_eq!(read_line(&mut reader).await.unwrap(), None);
}

//! Property tests (fuzzing on stable Rust with proptest) for the parsers that take bytes from
//! the network: the HTTP request decoder, the SQL splitter, the DDL tokenizer, the change-set
//! codec and the PostgreSQL frontend message path. Each property: any input gives an answer or
//! an error, never a panic (and the splitter's pieces come from the input).
//! Cases: `PROPTEST_CASES` (default 256 here, what `make test` runs); `make fuzz` runs
//! 1,000,000 per target. A failure prints the input, and proptest stores its seed under
//! `proptest-regressions/` so the same case runs first next time.

use bytes::BytesMut;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        // A failing case is reported as found; shrinking a million-case run can take long.
        max_shrink_iters: 1024,
        ..ProptestConfig::default()
    }
}

/// Text that looks like SQL more often than random text does: keywords, quotes, comments,
/// brackets and semicolons mixed with arbitrary characters.
fn sqlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("SELECT ".to_string()),
        Just("CREATE ".to_string()),
        Just("TEMP ".to_string()),
        Just("TRIGGER ".to_string()),
        Just("BEGIN ".to_string()),
        Just("END".to_string()),
        Just("EXPLAIN ".to_string()),
        Just("TABLE t(a) ".to_string()),
        Just("IF NOT EXISTS ".to_string()),
        Just("ALTER TABLE t ADD COLUMN b ".to_string()),
        Just("DROP INDEX i ".to_string()),
        Just(";".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("`".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("--".to_string()),
        Just("/*".to_string()),
        Just("*/".to_string()),
        Just("\n".to_string()),
        Just("$1".to_string()),
        "\\PC{0,8}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("\"sql\":".to_string()),
        Just("\"params\":".to_string()),
        Just("\"base64\":".to_string()),
        Just(",".to_string()),
        Just("\"x\"".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("-1.5e300".to_string()),
        Just("null".to_string()),
        Just("\"\\\"".to_string()),
        "\\PC{0,6}",
    ];
    prop_oneof![
        prop::collection::vec(piece, 0..24).prop_map(|v| v.concat().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn http_request_decoder_answers_every_body(body in jsonish()) {
        let _ = ha::http::json::parse_request(&body);
    }

    #[test]
    fn sql_splitter_pieces_come_from_the_input(sql in sqlish()) {
        for piece in ha::exec::split_sql(&sql) {
            prop_assert!(!piece.is_empty());
            prop_assert!(sql.contains(piece.as_str()));
        }
    }

    #[test]
    fn ddl_tokenizer_answers_every_statement(sql in sqlish()) {
        let _ = ha::changeset::ddl::classify(&sql);
        let _ = ha::changeset::ddl::plan(&sql);
        let _ = ha::changeset::ddl::idempotent_schema_sql(&sql);
    }

    #[test]
    fn changeset_decode_answers_every_payload(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        jsonish(),
    ]) {
        let _ = ha::changeset::decode(&bytes);
    }

    #[test]
    fn pg_frontend_messages_decode_or_fail_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        state in 0u8..3,
        tag in prop::sample::select(b"QPBEDSCHFpcdfX".to_vec()),
    ) {
        // Half the inputs start with a real message type, so the body decoders are reached.
        let mut framed = bytes.clone();
        if bytes.first().is_some_and(|b| b % 2 == 0) {
            framed.insert(0, tag);
        }
        let mut ctx = DecodeContext::default();
        ctx.protocol_version = ProtocolVersion::PROTOCOL3_0;
        ctx.awaiting_frontend_ssl = state == 0;
        ctx.awaiting_frontend_startup = state <= 1;
        let mut buf = BytesMut::from(&framed[..]);
        // Decode until an error, an incomplete message, or a message that consumed nothing.
        loop {
            let before = buf.len();
            match PgWireFrontendMessage::decode(&mut buf, &ctx) {
                Ok(Some(_)) if buf.len() < before => {}
                _ => break,
            }
        }
    }

    #[test]
    fn pg_query_text_is_planned_without_panics(sql in sqlish()) {
        let _ = ha::pgwire::plan_query_text(&sql);
    }
}

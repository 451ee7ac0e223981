//! `sql-notes`: keeps notes in the SQL database a custom base shares
//! (`berth:sql/query`, `examples/sql-base`).
//!
//! - `POST …` with a text body inserts a note and answers `{"id"}`;
//! - `GET …/tables` answers the names of the tables the module sees;
//! - any other `GET` answers `{"notes": [{"id", "body"}…]}`.
//!
//! Every request first creates its table if missing, so the module needs no
//! setup step. On a base without `berth:sql/query` the install is refused,
//! naming that interface.
use std::io::Read as _;

use wasip2::http::types::{IncomingBody, IncomingRequest, Method, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
        path: "../../examples/sql-base/wit",
        world: "berth:sql/host",
    });
}

use bindings::berth::sql::query::{self, Value};

wasip2::http::proxy::export!(Notes);

struct Notes;

fn read_body(request: &IncomingRequest) -> String {
    let Ok(body) = request.consume() else {
        return String::new();
    };
    let mut bytes = Vec::new();
    {
        let mut stream = body.stream().expect("stream is taken once");
        stream.read_to_end(&mut bytes).expect("read request body");
    }
    IncomingBody::finish(body);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => (*i).into(),
        Value::Real(r) => (*r).into(),
        Value::Text(t) => t.clone().into(),
        Value::Blob(b) => b.len().into(),
    }
}

fn serve(request: &IncomingRequest) -> Result<serde_json::Value, String> {
    query::execute(
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        &[],
    )?;
    let path = request.path_with_query().unwrap_or_default();
    if matches!(request.method(), Method::Post) {
        let body = read_body(request);
        query::execute("INSERT INTO notes (body) VALUES (?)", &[Value::Text(body)])?;
        let rows = query::query("SELECT last_insert_rowid()", &[])?;
        let id = rows.rows.first().and_then(|r| r.first()).map(json);
        return Ok(serde_json::json!({ "id": id }));
    }
    if path.ends_with("/tables") {
        let rows = query::query(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            &[],
        )?;
        let names: Vec<_> = rows.rows.iter().filter_map(|r| r.first()).map(json).collect();
        return Ok(serde_json::json!({ "tables": names }));
    }
    let rows = query::query("SELECT id, body FROM notes ORDER BY id", &[])?;
    let notes: Vec<_> = rows
        .rows
        .iter()
        .map(|r| serde_json::json!({ "id": json(&r[0]), "body": json(&r[1]) }))
        .collect();
    Ok(serde_json::json!({ "notes": notes }))
}

impl wasip2::exports::http::incoming_handler::Guest for Notes {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        match serve(&request) {
            Ok(body) => berth_guest::http::respond(
                out,
                200,
                "application/json",
                body.to_string().as_bytes(),
            ),
            Err(e) => {
                berth_guest::log::error(&format!("sql failed: {e}"));
                berth_guest::http::respond(out, 500, "text/plain", e.as_bytes())
            }
        }
    }
}

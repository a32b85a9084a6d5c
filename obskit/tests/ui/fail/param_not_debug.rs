use obskit::instrumented;

struct Connection;

// Parameters are recorded with `Debug`: one that is not must be skipped.
#[instrumented]
fn query(connection: &Connection, sql: &str) -> usize {
    let _ = connection;
    sql.len()
}

fn main() {
    query(&Connection, "select 1");
}

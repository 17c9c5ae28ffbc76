//! The row layout of each table: one Rust struct per table, with the ClickHouse type of every
//! field, in the table's column order.
//!
//! The writer inserts RowBinary without the client's validation (ClickHouse 18.16 lacks the
//! format validation needs), so the server trusts the bytes: a field of the wrong type or in the
//! wrong place would be read as some other column. [`Table::COLUMNS`] is therefore checked
//! against `system.columns` before any insert (see [`crate::Store::check_schema`]).

/// One column of a row layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// ClickHouse type, as `system.columns` spells it (e.g. `Array(UInt32)`).
    pub ty: &'static str,
}

/// A table of the output contract and its row type.
pub trait Table:
    clickhouse::RowOwned + clickhouse::RowWrite + clickhouse::RowRead + Send + Sync + 'static
{
    /// Table name in the store's database.
    const TABLE: &'static str;
    /// The inserted columns, in table order, with their types. Materialized columns (the
    /// `DateTime` views of `*_ms` columns) are not inserted and not listed.
    const COLUMNS: &'static [Column];
    /// The `ORDER BY` key: the row's identity. Rows with equal keys replace each other.
    const ORDER_BY: &'static [&'static str];
    /// The `ReplacingMergeTree` version column: of rows with equal keys, the one with the
    /// highest version survives merges and `FINAL`.
    const VERSION_COLUMN: &'static str;
}

/// Defines a row struct and its [`Table`] implementation from one list of fields.
macro_rules! table_row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            table: $table:literal,
            order_by: [$($key:literal),* $(,)?],
            version: $ver:literal,
            columns: {
                $( $(#[$fmeta:meta])* $field:ident : $ty:ty => $ch:literal, )*
            }
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::schema::Table for $name {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static [$crate::schema::Column] = &[
                $( $crate::schema::Column { name: stringify!($field), ty: $ch }, )*
            ];
            const ORDER_BY: &'static [&'static str] = &[$($key),*];
            const VERSION_COLUMN: &'static str = $ver;
        }
    };
}

pub(crate) use table_row;

/// Compares a table's inserted columns (name, type, in order) with a row layout.
pub(crate) fn compare_columns(
    table: &'static str,
    expected: &[Column],
    found: &[(String, String)],
) -> Result<(), crate::Error> {
    let show = |name: &str, ty: &str| format!("{name} {ty}");
    for i in 0..expected.len().max(found.len()) {
        let e = expected.get(i);
        let f = found.get(i);
        let same = matches!((e, f), (Some(e), Some(f)) if e.name == f.0 && e.ty == f.1);
        if !same {
            return Err(crate::Error::ColumnMismatch {
                table,
                position: i + 1,
                expected: e.map_or_else(|| "nothing".to_owned(), |e| show(e.name, e.ty)),
                found: f.map_or_else(|| "nothing".to_owned(), |f| show(&f.0, &f.1)),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: &[Column] =
        &[Column { name: "a", ty: "UInt32" }, Column { name: "b", ty: "String" }];

    fn found(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn equal_layouts_pass() {
        assert!(compare_columns("t", COLS, &found(&[("a", "UInt32"), ("b", "String")])).is_ok());
    }

    #[test]
    fn swapped_columns_name_the_first_difference() {
        let err = compare_columns("t", COLS, &found(&[("b", "String"), ("a", "UInt32")]));
        let Err(crate::Error::ColumnMismatch { table, position, expected, found }) = err else {
            panic!("expected a mismatch, got {err:?}");
        };
        assert_eq!((table, position), ("t", 1));
        assert_eq!((expected.as_str(), found.as_str()), ("a UInt32", "b String"));
    }

    #[test]
    fn missing_and_extra_columns() {
        let err = compare_columns("t", COLS, &found(&[("a", "UInt32")])).unwrap_err();
        assert!(err.to_string().contains("column 2 is nothing, expected b String"), "{err}");
        let err =
            compare_columns("t", COLS, &found(&[("a", "UInt32"), ("b", "String"), ("c", "UInt8")]))
                .unwrap_err();
        assert!(err.to_string().contains("column 3 is c UInt8, expected nothing"), "{err}");
    }

    #[test]
    fn type_change_is_a_mismatch() {
        let err = compare_columns("t", COLS, &found(&[("a", "UInt64"), ("b", "String")]));
        assert!(matches!(err, Err(crate::Error::ColumnMismatch { position: 1, .. })));
    }
}

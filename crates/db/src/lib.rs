//! What every service's Postgres store shares. Metering, distill and the selector can share one
//! database because each keeps its tables and its migration history (`_sqlx_migrations`, or its own
//! migrations table) in a schema of its own; [`in_own_schema`] picks that schema, creates it when
//! missing, and points the connections' `search_path` at it.
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

/// Which service's schema: its name (in logs), the schema used when the configuration names none,
/// and a table every database of that service has — where it already sits, a database migrated
/// before the service had a schema of its own is found (`None` for a service that always had one).
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    pub service: &'static str,
    pub default: &'static str,
    pub marker_table: Option<&'static str>,
}

/// Why a schema could not be chosen.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The configured name is not a plain identifier (the message is the caller's to show).
    #[error("schema name {0:?}: letters, digits and _ only")]
    Name(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// `o` with its `search_path` set to the schema to use: `configured`, else `schema.default` — or,
/// when that does not exist yet and the service's marker table already sits in the connection's
/// own search path (a database migrated before the default schema), the schema holding it, so an
/// upgrade keeps its data. Creates the schema when it is missing (tolerating another process
/// creating it at the same moment); one that exists is used as it is (no CREATE privilege needed).
/// Names are folded to lower case, as Postgres folds unquoted identifiers.
pub async fn in_own_schema(
    o: PgConnectOptions,
    configured: Option<&str>,
    schema: Schema,
) -> Result<PgConnectOptions, SchemaError> {
    let name = configured.unwrap_or(schema.default).to_ascii_lowercase();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(SchemaError::Name(name));
    }
    let mut c = PgConnection::connect_with(&o).await?;
    let chosen = choose(&mut c, name, configured.is_some(), schema).await;
    let _ = c.close().await;
    let chosen = chosen?;
    Ok(o.options([("search_path", chosen.as_str())]))
}

async fn choose(
    c: &mut PgConnection,
    name: String,
    configured: bool,
    schema: Schema,
) -> Result<String, SchemaError> {
    if exists(c, &name).await? {
        return Ok(name);
    }
    if !configured && let Some(marker) = schema.marker_table {
        let legacy: Option<String> = sqlx::query_scalar(
            "SELECT n.nspname::text FROM pg_class AS t JOIN pg_namespace AS n ON n.oid = t.relnamespace \
             WHERE t.oid = to_regclass($1)",
        )
        .bind(marker)
        .fetch_optional(&mut *c)
        .await?;
        if let Some(legacy) = legacy {
            let (service, default) = (schema.service, schema.default);
            tracing::warn!(
                schema = %legacy,
                "{service}: using the tables already in schema {legacy} (migrated before {service} kept its own schema, {default}); \
                 set {service}'s database_schema = \"{legacy}\" to keep them there, or move them with ALTER TABLE ... SET SCHEMA {default} \
                 (with _sqlx_migrations) to share the database with the other services"
            );
            return Ok(legacy);
        }
    }
    if let Err(e) = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {name}"))
        .execute(&mut *c)
        .await
    {
        // Two processes starting at once: the loser's CREATE fails on the catalog's unique index
        // although the schema now exists.
        if !exists(c, &name).await? {
            return Err(e.into());
        }
    }
    Ok(name)
}

async fn exists(c: &mut PgConnection, schema: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(c)
        .await
}

//! Person handler with state: logpipe's `Person` example with its model.
//!
//! django-logpipe's `PersonSerializer` looks the person up by uuid
//! (`lookup_instance`) and `save()`s it: created if new, updated otherwise.
//! Here the "table" is the host's store, key `person/{uuid}`, so the update
//! and the record's offset are committed together. `updates` counts every
//! save, like an auto-incremented revision: if a record were ever applied
//! twice, it would show. A "person-indexed" v1 message goes to
//! "people-index" only when the name actually changed.
use logpipe_sdk::{Context, HandleError, Handler};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Person {
    uuid: String,
    first_name: String,
    last_name: String,
}

/// The stored row.
#[derive(Serialize, Deserialize)]
struct PersonRow {
    uuid: String,
    first_name: String,
    last_name: String,
    /// Saves applied to this person, the first one included.
    updates: u64,
}

#[derive(Serialize)]
struct PersonIndexed {
    uuid: String,
    full_name: String,
    /// The row's `updates` when this name was saved.
    revision: u64,
}

logpipe_sdk::message!(PersonIndexed, "person-indexed", 1);

struct PersonStore;

impl Handler for PersonStore {
    const MESSAGE_TYPE: &'static str = "person";
    const VERSION: u32 = 1;
    type Message = Person;

    fn handle(person: Person, ctx: &mut Context) -> Result<(), HandleError> {
        if person.uuid.is_empty() || person.first_name.trim().is_empty() {
            return Err(HandleError::reject("uuid and first_name are required"));
        }
        let store = ctx.store();
        let key = format!("person/{}", person.uuid);
        // A row we cannot read back is a bug to look at, not to overwrite.
        let existing: Option<PersonRow> = store
            .get_json(&key)
            .map_err(|e| HandleError::retry(format_args!("stored {key} is unreadable: {e}")))?;
        let changed = existing.as_ref().is_none_or(|row| {
            row.first_name != person.first_name || row.last_name != person.last_name
        });
        let row = PersonRow {
            updates: existing.map_or(0, |row| row.updates) + 1,
            uuid: person.uuid,
            first_name: person.first_name,
            last_name: person.last_name,
        };
        store
            .put_json(&key, &row)
            .map_err(|e| HandleError::reject(format_args!("cannot encode {key}: {e}")))?;
        if changed {
            let indexed = PersonIndexed {
                uuid: row.uuid.clone(),
                full_name: format!("{} {}", row.first_name, row.last_name),
                revision: row.updates,
            };
            ctx.produce("people-index", &indexed, Some(&row.uuid))?;
        }
        Ok(())
    }
}

logpipe_sdk::export_handler!(PersonStore);

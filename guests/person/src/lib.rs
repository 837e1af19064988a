//! Person handler: logpipe's `Person` example. Validates "person" v1 records
//! and indexes each as a "person-indexed" v1 message on "people-index".
use logpipe_sdk::{Context, HandleError, Handler};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Person {
    uuid: String,
    first_name: String,
    last_name: String,
}

#[derive(Serialize)]
struct PersonIndexed {
    uuid: String,
    full_name: String,
}

logpipe_sdk::message!(PersonIndexed, "person-indexed", 1);

struct People;

impl Handler for People {
    const MESSAGE_TYPE: &'static str = "person";
    const VERSION: u32 = 1;
    type Message = Person;

    fn handle(person: Person, ctx: &mut Context) -> Result<(), HandleError> {
        // Bad data never becomes good: reject, so the record is skipped.
        if !is_canonical_uuid(&person.uuid) {
            return Err(HandleError::reject(format_args!(
                "uuid {:?} is not a canonical UUID",
                person.uuid
            )));
        }
        if person.first_name.trim().is_empty() || person.last_name.trim().is_empty() {
            return Err(HandleError::reject(
                "first_name and last_name must not be empty",
            ));
        }
        let indexed = PersonIndexed {
            uuid: person.uuid,
            full_name: format!("{} {}", person.first_name, person.last_name),
        };
        // A produce failure is transient: `?` turns it into `retry`.
        ctx.produce("people-index", &indexed, Some(&indexed.uuid))?;
        ctx.debug(format_args!(
            "indexed {} as {:?}",
            indexed.uuid, indexed.full_name
        ));
        Ok(())
    }
}

/// 8-4-4-4-12 hex digits (either case), e.g. `6ba7b810-9dad-11d1-80b4-00c04fd430c8`.
fn is_canonical_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

logpipe_sdk::export_handler!(People);

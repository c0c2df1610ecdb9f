//! Validation cost per item under the default content policy: the synchronous check
//! (schema, PII redaction) and production mode's after-ack review (every rule), on
//! ~300-byte texts that are plain ASCII, non-ASCII (what `chorus bench` sends) and
//! carrying PII.

use std::hint::black_box;

use chorus_actors::validation::{ValidationConfig, Validator};
use chorus_protocol::{Item, Kind};
use criterion::{Criterion, criterion_group, criterion_main};

fn texts() -> [(&'static str, String); 3] {
    let filler = |start: &str| -> String {
        start
            .chars()
            .chain(std::iter::repeat('x'))
            .take(300)
            .collect()
    };
    [
        (
            "ascii",
            filler("The export button does nothing on the second page of results. "),
        ),
        ("non_ascii", filler("Très bien — ")),
        (
            "pii",
            filler("Call me on +1 415 555 0134 or write to jane.doe@example.com about it. "),
        ),
    ]
}

fn item(text: &str) -> Item {
    let mut item = Item::new(String::from("user-00000000042"), Kind::Bug);
    item.text = text.to_owned();
    item.rating = Some(4);
    item
}

fn validation(c: &mut Criterion) {
    let validator = Validator::new(ValidationConfig::default()).expect("defaults compile");
    let mut group = c.benchmark_group("validation");
    for (name, text) in texts() {
        group.bench_function(format!("check/{name}"), |b| {
            b.iter_batched(
                || item(&text),
                |mut item| black_box(validator.check(&mut item)),
                criterion::BatchSize::SmallInput,
            )
        });
        let mut stored = item(&text);
        let verdict = validator.check(&mut stored).expect("a valid item");
        let deferred = verdict.deferred.expect("production mode defers the rules");
        group.bench_function(format!("review/{name}"), |b| {
            b.iter(|| black_box(validator.check_deferred(&stored, &deferred)))
        });
    }
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, validation);
}

criterion_main!(group::benches);

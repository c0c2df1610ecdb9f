//! `chorus events` (a listing by time range and type, or a follow that prints events
//! as they come) and `chorus functions deprecate|activate|current`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_client::{Client, ClientConfig, EventCursor, EventQuery, EventType, EventTypes};
use chorus_protocol::{Event, EventKind, MAX_EVENTS_PAGE, VersionChange};
use serde_json::{Value, json};

use super::output::{reason_text, timestamp};
use super::parse_function;
use crate::tools::cli::{EventsArgs, VersionArgs};
use crate::tools::connect::connect;
use crate::tools::error::CliError;

/// `chorus events`.
pub async fn events(args: EventsArgs) -> Result<(), CliError> {
    let types = parse_types(&args.types)?;
    let now = now_ms();
    let since_ms = args
        .since
        .as_deref()
        .map(|t| parse_time(t, now))
        .transpose()?;
    let until_ms = args
        .until
        .as_deref()
        .map(|t| parse_time(t, now))
        .transpose()?;
    let cursor = match &args.cursor {
        Some(token) => EventCursor::from_token(token)?,
        None => EventCursor::default(),
    };
    // A follow waits on the server for up to half a minute at a time.
    let config = ClientConfig {
        request_timeout: Duration::from_secs(60),
        ..ClientConfig::default()
    };
    let client = connect(&args.connect, config).await?;
    let outcome = if args.follow {
        follow(&client, types, cursor, args.json).await
    } else {
        let query = EventQuery {
            types,
            since_ms,
            until_ms,
        };
        list(&client, &query, args.limit, args.json).await
    };
    client.close().await;
    outcome
}

async fn list(
    client: &Client,
    query: &EventQuery,
    limit: Option<u64>,
    json: bool,
) -> Result<(), CliError> {
    let mut left = limit.unwrap_or(u64::MAX);
    let mut after = None;
    while left > 0 {
        let page_limit = left.min(u64::from(MAX_EVENTS_PAGE)) as u32;
        let page = client.events(query, after, page_limit).await?;
        for event in &page.events {
            print_event(event, None, json);
        }
        left = left.saturating_sub(page.events.len() as u64);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(())
}

async fn follow(
    client: &Client,
    types: EventTypes,
    cursor: EventCursor,
    json: bool,
) -> Result<(), CliError> {
    let mut stream = client.follow_events(types, cursor);
    loop {
        let event = tokio::select! {
            event = stream.next() => event?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        print_event(&event, Some(stream.cursor()), json);
    }
}

/// `chorus functions deprecate|activate|current NAME@VERSION`.
pub async fn change_version(args: VersionArgs, change: VersionChange) -> Result<(), CliError> {
    let function = parse_function(&args.function)?;
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let event = client.change_version(function, change).await;
    client.close().await;
    print_event(&event?, None, args.json);
    Ok(())
}

fn parse_types(names: &[String]) -> Result<EventTypes, CliError> {
    if names.is_empty() {
        return Ok(EventTypes::all());
    }
    names
        .iter()
        .map(|name| name.parse::<EventType>().map_err(CliError::from))
        .collect()
}

/// Milliseconds since the Unix epoch, or a duration before `now_ms`.
fn parse_time(text: &str, now_ms: u64) -> Result<u64, CliError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let ago = humantime::parse_duration(text).map_err(|e| {
        CliError::Usage(format!(
            "{text:?}: expected milliseconds since the Unix epoch or a duration ago: {e}"
        ))
    })?;
    Ok(now_ms.saturating_sub(ago.as_millis() as u64))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn print_event(event: &Event, cursor: Option<&EventCursor>, json: bool) {
    if json {
        let mut value = event_json(event);
        if let Some(cursor) = cursor {
            value["cursor"] = json!(cursor.to_token());
        }
        println!("{value}");
        return;
    }
    println!(
        "{}  {:<18}  {}",
        timestamp(event.at_ms),
        event.event_type().as_str(),
        summary(&event.kind)
    );
}

/// An event as JSON: `type`, `at_ms`, `origin`, `seq`, and its own fields.
pub fn event_json(event: &Event) -> Value {
    let mut value = json!({
        "type": event.event_type().as_str(),
        "at_ms": event.at_ms,
        "origin": event.origin.0,
        "seq": event.seq,
    });
    let fields = match &event.kind {
        EventKind::RequiresUpdate { function, reasons } => json!({
            "function": function.name,
            "version": function.version,
            "reasons": reasons.0.iter().map(reason_text).collect::<Vec<_>>(),
        }),
        EventKind::UpdateCleared { function } => {
            json!({"function": function.name, "version": function.version})
        }
        EventKind::VersionDeprecated { function, by }
        | EventKind::VersionActivated { function, by }
        | EventKind::CurrentVersion { function, by } => {
            json!({"function": function.name, "version": function.version, "by": by})
        }
        EventKind::ItemFlagged {
            item,
            user_id,
            reasons,
        } => json!({"item": item.to_string(), "user_id": user_id, "reasons": reasons}),
        EventKind::ItemReviewed {
            item,
            user_id,
            approved,
            by,
        } => json!({
            "item": item.to_string(), "user_id": user_id, "approved": approved, "by": by
        }),
        EventKind::UserExported { user_id, items, by }
        | EventKind::UserDeleted { user_id, items, by } => {
            json!({"user_id": user_id, "items": items, "by": by})
        }
        EventKind::PrivacySpent { key_id, epsilon } => {
            json!({"key_id": key_id, "epsilon": epsilon})
        }
    };
    if let (Value::Object(into), Value::Object(from)) = (&mut value, fields) {
        into.extend(from);
    }
    value
}

fn summary(kind: &EventKind) -> String {
    match kind {
        EventKind::RequiresUpdate { function, reasons } => {
            let reasons: Vec<String> = reasons.0.iter().map(reason_text).collect();
            format!(
                "{}@{}: {}",
                function.name,
                function.version,
                reasons.join("; ")
            )
        }
        EventKind::UpdateCleared { function } => {
            format!("{}@{}", function.name, function.version)
        }
        EventKind::VersionDeprecated { function, by }
        | EventKind::VersionActivated { function, by }
        | EventKind::CurrentVersion { function, by } => {
            format!("{}@{} by key {by}", function.name, function.version)
        }
        EventKind::ItemFlagged {
            item,
            user_id,
            reasons,
        } => format!("{item} of {user_id}: {}", reasons.join(", ")),
        EventKind::ItemReviewed {
            item,
            user_id,
            approved,
            by,
        } => format!(
            "{item} of {user_id} {} by key {by}",
            if *approved { "approved" } else { "rejected" }
        ),
        EventKind::UserExported { user_id, items, by }
        | EventKind::UserDeleted { user_id, items, by } => {
            format!("{user_id}: {items} items, by key {by}")
        }
        EventKind::PrivacySpent { key_id, epsilon } => {
            format!("key {key_id} spent epsilon {epsilon}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_epoch_milliseconds_or_a_duration_ago() {
        assert_eq!(parse_time("1765000000000", 0).unwrap(), 1_765_000_000_000);
        assert_eq!(parse_time("15m", 1_000_000).unwrap(), 100_000);
        assert_eq!(parse_time("2h", 1_000).unwrap(), 0);
        assert!(parse_time("yesterday", 0).is_err());
    }

    #[test]
    fn types_name_known_ones_and_default_to_all() {
        assert_eq!(parse_types(&[]).unwrap(), EventTypes::all());
        let some = parse_types(&["user_deleted".into()]).unwrap();
        assert!(some.contains(EventType::UserDeleted));
        assert!(!some.contains(EventType::ItemFlagged));
        assert!(parse_types(&["nope".into()]).is_err());
    }
}

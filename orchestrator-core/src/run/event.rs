//! Run events in plain Rust, converted to and from the stable [`RunEvent`].

use chrono::{DateTime, Utc};

use super::{RunStatus, StepStatus};
use crate::abi::{EventKind, RunEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Something that happened in a run. Its JSON form (one object per line, tagged by `event`) is
/// how a remote agent reports to the machine that follows the run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Log {
        step: String,
        stream: LogStream,
        line: String,
        time: DateTime<Utc>,
    },
    StepStatus {
        step: String,
        status: StepStatus,
        time: DateTime<Utc>,
    },
    RunStatus {
        status: RunStatus,
        time: DateTime<Utc>,
    },
    Notice {
        step: Option<String>,
        text: String,
        time: DateTime<Utc>,
    },
}

impl Event {
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::Log { step, .. } | Event::StepStatus { step, .. } => Some(step),
            Event::Notice { step, .. } => step.as_deref(),
            Event::RunStatus { .. } => None,
        }
    }
}

impl From<Event> for RunEvent {
    fn from(event: Event) -> Self {
        let (kind, step, text, time) = match event {
            Event::Log {
                step,
                stream,
                line,
                time,
            } => {
                let kind = match stream {
                    LogStream::Stdout => EventKind::STDOUT,
                    LogStream::Stderr => EventKind::STDERR,
                };
                (kind, step, line, time)
            }
            Event::StepStatus { step, status, time } => (
                EventKind::STEP_STATUS,
                step,
                status.as_str().to_string(),
                time,
            ),
            Event::RunStatus { status, time } => (
                EventKind::RUN_STATUS,
                String::new(),
                status.as_str().to_string(),
                time,
            ),
            Event::Notice { step, text, time } => {
                (EventKind::NOTICE, step.unwrap_or_default(), text, time)
            }
        };
        RunEvent {
            kind,
            step: step.into(),
            text: text.into(),
            time_ms: time.timestamp_millis(),
        }
    }
}

impl From<RunEvent> for Event {
    fn from(event: RunEvent) -> Self {
        let time = DateTime::from_timestamp_millis(event.time_ms).unwrap_or_default();
        let step = event.step.into_string();
        let text = event.text.into_string();
        match event.kind {
            EventKind::STDOUT => Event::Log {
                step,
                stream: LogStream::Stdout,
                line: text,
                time,
            },
            EventKind::STDERR => Event::Log {
                step,
                stream: LogStream::Stderr,
                line: text,
                time,
            },
            EventKind::STEP_STATUS => match text.parse() {
                Ok(status) => Event::StepStatus { step, status, time },
                Err(_) => Event::Notice {
                    step: Some(step),
                    text: format!("status {text}"),
                    time,
                },
            },
            EventKind::RUN_STATUS => match text.parse() {
                Ok(status) => Event::RunStatus { status, time },
                Err(_) => Event::Notice {
                    step: None,
                    text: format!("run status {text}"),
                    time,
                },
            },
            // Notices, and kinds a newer plugin sends that this ferry does not know yet.
            _ => Event::Notice {
                step: (!step.is_empty()).then_some(step),
                text,
                time,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_boundary() {
        let time = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let events = [
            Event::Log {
                step: "a".into(),
                stream: LogStream::Stderr,
                line: "oops".into(),
                time,
            },
            Event::StepStatus {
                step: "a".into(),
                status: StepStatus::Cached,
                time,
            },
            Event::RunStatus {
                status: RunStatus::Failed,
                time,
            },
            Event::Notice {
                step: None,
                text: "hi".into(),
                time,
            },
        ];
        for event in events {
            assert_eq!(Event::from(RunEvent::from(event.clone())), event);
        }
    }
}

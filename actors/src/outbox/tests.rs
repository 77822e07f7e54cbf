//! The outbox against a recording transport, in controlled time: the manual clock moves
//! only when nothing is in flight (see [`OutboxHandle::at_rest`]), so every call is
//! recorded at the moment the outbox sent it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{BlockedListener, Outbox, OutboxDeps, OutboxHandle, OutboxSettings, Priority};
use crate::metrics::Metrics;
use crate::ports::clock::UnixMillis;
use crate::ports::{ChatId, Clock, DeliveryError, Keyboard, ManualClock, Messenger, Render};
use crate::supervision::Supervisor;
use crate::sync::lock;

const START: UnixMillis = 1_800_000_000_000;

/// One call the transport took: when (the manual clock), to which chat, what.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Taken {
    at: UnixMillis,
    chat: ChatId,
    method: &'static str,
}

/// A Bot API stand-in that records calls and answers from a script per chat.
struct Transport {
    clock: Arc<ManualClock>,
    taken: Mutex<Vec<Taken>>,
    script: Mutex<HashMap<ChatId, VecDeque<DeliveryError>>>,
    /// How long Telegram takes to answer (real time).
    latency: Mutex<Duration>,
}

impl Transport {
    fn take(&self, chat: ChatId, method: &'static str) -> Result<(), DeliveryError> {
        lock(&self.taken).push(Taken {
            at: self.clock.now_millis(),
            chat,
            method,
        });
        match lock(&self.script)
            .get_mut(&chat)
            .and_then(VecDeque::pop_front)
        {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn answer(&self, chat: ChatId, error: DeliveryError) {
        lock(&self.script).entry(chat).or_default().push_back(error);
    }

    fn taken(&self) -> Vec<Taken> {
        lock(&self.taken).clone()
    }
}

#[async_trait]
impl Messenger for Transport {
    async fn send_text(
        &self,
        chat: ChatId,
        _: &str,
        _: Option<&Keyboard>,
    ) -> Result<i64, DeliveryError> {
        let latency = *lock(&self.latency);
        if !latency.is_zero() {
            actix_rt::time::sleep(latency).await;
        }
        self.take(chat, "sendMessage").map(|()| 1)
    }

    async fn edit_text(
        &self,
        chat: ChatId,
        _: i64,
        _: &str,
        _: Option<&Keyboard>,
        _: Render,
    ) -> Result<(), DeliveryError> {
        self.take(chat, "editMessageText")
    }

    async fn delete_message(&self, chat: ChatId, _: i64) -> Result<(), DeliveryError> {
        self.take(chat, "deleteMessage")
    }

    async fn acknowledge_button(&self, _: &str) -> Result<(), DeliveryError> {
        self.take(0, "answerCallbackQuery")
    }
}

#[derive(Default)]
struct Blocked(Mutex<Vec<ChatId>>);

impl BlockedListener for Blocked {
    fn blocked(&self, chat: ChatId) {
        lock(&self.0).push(chat);
    }
}

struct Bench {
    outbox: OutboxHandle,
    transport: Arc<Transport>,
    blocked: Arc<Blocked>,
    clock: Arc<ManualClock>,
    metrics: Metrics,
}

fn bench(settings: OutboxSettings) -> Bench {
    let clock = ManualClock::starting_at(START);
    let transport = Arc::new(Transport {
        clock: clock.clone(),
        taken: Mutex::default(),
        script: Mutex::default(),
        latency: Mutex::default(),
    });
    let blocked = Arc::new(Blocked::default());
    let metrics = Metrics::new().expect("metrics");
    let outbox = Outbox::launch(OutboxDeps {
        transport: transport.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        supervisor: Arc::new(Supervisor::new(HashMap::new(), metrics.clone())),
        blocked: blocked.clone(),
        settings,
    });
    Bench {
        outbox,
        transport,
        blocked,
        clock,
        metrics,
    }
}

impl Bench {
    /// Moves the clock, whenever nothing is in flight, to the next moment a call may go
    /// (or 10 ms on, when nothing waits), until `done` holds. Calls submitted just before
    /// reach the outbox first.
    async fn drive_until(&self, mut done: impl FnMut() -> bool) {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        let mut steps = 0;
        while !done() {
            steps += 1;
            assert!(steps < 1_000_000, "the outbox never got there");
            let clock = self.clock.clone();
            self.outbox
                .at_rest(move |pulse| {
                    let now = clock.now_millis();
                    match pulse.next_ready_at {
                        Some(at) => clock.set(at.max(now)),
                        None => clock.set(now + 10),
                    }
                })
                .await;
            // Callers woken from the outbox's thread submit their next call before time
            // moves again.
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The most calls in any window of `window_ms` among `times` (sorted).
fn most_in_window(times: &[UnixMillis], window_ms: i64) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window_ms {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[actix_rt::test]
async fn a_broadcast_keeps_to_telegrams_limits_while_replies_keep_their_latency() {
    let bench = bench(OutboxSettings::default());
    let broadcast = bench.outbox.messenger(Priority::Broadcast);
    let chats = 2_000;
    let mut sends = Vec::new();
    for chat in 1..=chats {
        let broadcast = broadcast.clone();
        sends.push(tokio::spawn(async move {
            broadcast.send_text(100_000 + chat, "news", None).await
        }));
    }
    // Meanwhile a user chats: a reply every five seconds, each a send and an edit.
    let reply = bench.outbox.messenger(Priority::Reply);
    let clock = bench.clock.clone();
    let replies = tokio::spawn(async move {
        let mut latencies = Vec::new();
        for turn in 1..=10 {
            clock.sleep_until(START + turn * 5_000).await;
            let asked = clock.now_millis();
            reply
                .send_text(7, "…", None)
                .await
                .expect("the placeholder");
            reply
                .edit_text(7, 1, "the reply", None, Render::Final)
                .await
                .expect("the reply");
            latencies.push(clock.now_millis() - asked);
        }
        latencies
    });
    bench
        .drive_until(|| sends.iter().all(|send| send.is_finished()) && replies.is_finished())
        .await;
    for send in sends {
        send.await
            .expect("joined")
            .expect("every broadcast message is sent");
    }
    let latencies = replies.await.expect("joined");
    let taken = bench.transport.taken();
    let times: Vec<_> = taken.iter().map(|call| call.at).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
    assert_eq!(taken.len(), 2_000 + 20);
    assert_eq!(
        most_in_window(&times, 1_000),
        30,
        "never more than 30 a second"
    );
    // 2 000 messages at 30 a second, with the replies' 20 among them.
    let took = times[times.len() - 1] - START;
    assert!((67_000..=69_000).contains(&took), "took {took} ms");
    // A reply waits for at most the next free slot of the second, never behind the queue.
    assert!(
        latencies.iter().all(|latency| *latency <= 100),
        "reply latencies {latencies:?}"
    );
    let broadcast_chats: HashMap<ChatId, usize> =
        taken.iter().fold(HashMap::new(), |mut counts, call| {
            *counts.entry(call.chat).or_default() += 1;
            counts
        });
    assert!(
        broadcast_chats
            .iter()
            .all(|(chat, count)| *chat == 7 || *count == 1)
    );
    assert_eq!(
        bench
            .metrics
            .outbox_queue_depth
            .with_label_values(&["broadcast"])
            .get(),
        0
    );
}

#[actix_rt::test]
async fn a_private_chat_gets_a_short_burst_then_one_message_a_second() {
    let bench = bench(OutboxSettings::default());
    let notification = bench.outbox.messenger(Priority::Notification);
    let sends: Vec<_> = (0..6)
        .map(|_| {
            let notification = notification.clone();
            tokio::spawn(async move { notification.send_text(5, "hello", None).await })
        })
        .collect();
    bench
        .drive_until(|| sends.iter().all(|send| send.is_finished()))
        .await;
    let times: Vec<_> = bench
        .transport
        .taken()
        .iter()
        .map(|call| call.at - START)
        .collect();
    assert_eq!(times, [0, 33, 66, 1_000, 2_000, 3_000]);
}

#[actix_rt::test]
async fn a_group_gets_twenty_messages_a_minute() {
    let bench = bench(OutboxSettings::default());
    let notification = bench.outbox.messenger(Priority::Notification);
    let sends: Vec<_> = (0..25)
        .map(|_| {
            let notification = notification.clone();
            tokio::spawn(async move { notification.send_text(-1_001, "hello", None).await })
        })
        .collect();
    bench
        .drive_until(|| sends.iter().all(|send| send.is_finished()))
        .await;
    let times: Vec<_> = bench
        .transport
        .taken()
        .iter()
        .map(|call| call.at - START)
        .collect();
    assert_eq!(most_in_window(&times, 60_000), 20);
    assert_eq!(times[20], 60_000);
}

#[actix_rt::test]
async fn a_429_pauses_its_chat_for_retry_after_then_the_call_goes() {
    let bench = bench(OutboxSettings::default());
    bench.transport.answer(
        9,
        DeliveryError::Throttled {
            retry_after: Duration::from_secs(7),
        },
    );
    let messenger = bench.outbox.messenger(Priority::Notification);
    let send = tokio::spawn(async move { messenger.send_text(9, "hello", None).await });
    let other = bench.outbox.messenger(Priority::Notification);
    let elsewhere = tokio::spawn(async move { other.send_text(10, "hello", None).await });
    bench
        .drive_until(|| send.is_finished() && elsewhere.is_finished())
        .await;
    send.await.expect("joined").expect("sent after the wait");
    elsewhere.await.expect("joined").expect("sent");
    let taken = bench.transport.taken();
    let to_nine: Vec<_> = taken
        .iter()
        .filter(|call| call.chat == 9)
        .map(|call| call.at - START)
        .collect();
    assert_eq!(
        to_nine,
        [0, 7_000],
        "the second attempt waits out retry_after"
    );
    assert!(
        taken
            .iter()
            .any(|call| call.chat == 10 && call.at < START + 1_000),
        "other chats are not held back by one chat's pause"
    );
    assert_eq!(bench.metrics.telegram_retry_after_total.get(), 1);
}

#[actix_rt::test]
async fn a_blocked_user_is_reported_once_and_their_waiting_calls_are_dropped() {
    let bench = bench(OutboxSettings::default());
    bench.transport.answer(11, DeliveryError::Blocked);
    // Telegram takes a while to answer, so the other calls wait behind the first.
    *lock(&bench.transport.latency) = Duration::from_millis(200);
    let messenger = bench.outbox.messenger(Priority::Notification);
    let sends: Vec<_> = (0..5)
        .map(|_| {
            let messenger = messenger.clone();
            tokio::spawn(async move { messenger.send_text(11, "hello", None).await })
        })
        .collect();
    bench
        .drive_until(|| sends.iter().all(|send| send.is_finished()))
        .await;
    for send in sends {
        assert!(matches!(
            send.await.expect("joined"),
            Err(DeliveryError::Blocked)
        ));
    }
    assert_eq!(
        bench.transport.taken().len(),
        1,
        "never retried, nothing more sent"
    );
    assert_eq!(*lock(&bench.blocked.0), [11]);
    assert_eq!(bench.metrics.telegram_blocked_users_total.get(), 1);
}

#[actix_rt::test]
async fn a_refused_call_is_not_retried() {
    let bench = bench(OutboxSettings::default());
    bench.transport.answer(
        12,
        DeliveryError::Failed("Bad Request: chat not found".into()),
    );
    let messenger = bench.outbox.messenger(Priority::Reply);
    let outcome = messenger.send_text(12, "hello", None).await;
    assert!(matches!(outcome, Err(DeliveryError::Failed(_))));
    assert_eq!(bench.transport.taken().len(), 1);
}

#[actix_rt::test]
async fn replies_go_before_notifications_and_broadcasts_waiting_for_the_same_second() {
    let bench = bench(OutboxSettings {
        global_per_second: 1,
        ..OutboxSettings::default()
    });
    // The first call takes the second's only slot; the rest queue.
    let first = bench.outbox.messenger(Priority::Broadcast);
    first.send_text(20, "first", None).await.expect("sent");
    let mut waiting = Vec::new();
    for (chat, priority) in [
        (21, Priority::Broadcast),
        (22, Priority::Notification),
        (23, Priority::Reply),
    ] {
        let messenger = bench.outbox.messenger(priority);
        waiting.push(tokio::spawn(async move {
            messenger.send_text(chat, "waiting", None).await
        }));
    }
    bench
        .drive_until(|| waiting.iter().all(|send| send.is_finished()))
        .await;
    let order: Vec<_> = bench
        .transport
        .taken()
        .iter()
        .map(|call| call.chat)
        .collect();
    assert_eq!(order, [20, 23, 22, 21]);
}

#[actix_rt::test]
async fn a_full_outbox_sheds_broadcasts_first_and_never_a_reply() {
    let bench = bench(OutboxSettings {
        global_per_second: 1,
        capacity: 3,
        ..OutboxSettings::default()
    });
    bench
        .outbox
        .messenger(Priority::Reply)
        .send_text(30, "takes the slot", None)
        .await
        .expect("sent");
    let submit = |chat: ChatId, priority: Priority| {
        let messenger = bench.outbox.messenger(priority);
        tokio::spawn(async move { messenger.send_text(chat, "x", None).await })
    };
    let broadcasts: Vec<_> = (31..34)
        .map(|chat| submit(chat, Priority::Broadcast))
        .collect();
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    let replies: Vec<_> = (40..44).map(|chat| submit(chat, Priority::Reply)).collect();
    bench
        .drive_until(|| {
            broadcasts.iter().all(|send| send.is_finished())
                && replies.iter().all(|send| send.is_finished())
        })
        .await;
    for reply in replies {
        reply.await.expect("joined").expect("a reply is never shed");
    }
    let shed = futures::future::join_all(broadcasts)
        .await
        .into_iter()
        .filter(|outcome| matches!(outcome, Ok(Err(DeliveryError::Shed))))
        .count();
    assert_eq!(shed, 3, "every broadcast made room for a reply");
    assert_eq!(
        bench
            .metrics
            .outbox_shed_total
            .with_label_values(&["broadcast"])
            .get(),
        3
    );
}

#[actix_rt::test]
async fn a_draft_that_would_wait_is_refused_at_once_and_leaves_room_for_the_final_text() {
    let bench = bench(OutboxSettings::default());
    let reply = bench.outbox.messenger(Priority::Reply);
    reply
        .send_text(50, "…", None)
        .await
        .expect("the placeholder");
    bench.clock.advance(Duration::from_millis(100));
    reply
        .edit_text(50, 1, "a draft", None, Render::Draft)
        .await
        .expect("a draft goes while two calls are left");
    // One call is left for this second: it is kept for the final text.
    let refused = reply
        .edit_text(50, 1, "another draft", None, Render::Draft)
        .await;
    assert!(
        matches!(refused, Err(DeliveryError::Throttled { retry_after }) if retry_after <= Duration::from_secs(1)),
        "{refused:?}"
    );
    bench.clock.advance(Duration::from_millis(50));
    reply
        .edit_text(50, 1, "the final text", None, Render::Final)
        .await
        .expect("the final text goes at once");
    let times: Vec<_> = bench
        .transport
        .taken()
        .iter()
        .map(|call| call.at - START)
        .collect();
    assert_eq!(times, [0, 100, 150]);
}

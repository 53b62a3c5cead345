//! What this machine charges for handing work from one thread to the next, with no work at
//! all: the floor under any latency figure of a pipeline whose stages are threads.
//!
//! Run: `cargo run --release -p orbiter --example handoffs -- [messages]` (default 20,000).
//! One message every 200 µs goes through (1) one hand-off (a channel send that wakes a
//! sleeping thread) and (2) a chain of four threads, each passing it on; each prints the
//! percentiles of the time from the send to its arrival. (3) is how late a 200 µs sleep wakes.
//! On a VM the tail is the hypervisor's: a vCPU that halted must be scheduled again by the
//! host before the thread it should run can.

use std::sync::mpsc;
use std::time::{Duration, Instant};

const GAP: Duration = Duration::from_micros(200);

fn main() {
    let messages: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("a number of messages"))
        .unwrap_or(20_000);
    let (mut one_hop, mut late) = one_hop(messages);
    report("one hand-off", &mut one_hop);
    report("a 200 µs sleep, late by", &mut late);
    report("a chain of four hand-offs", &mut chain(messages, 4));
}

/// One sender, one receiver: the receiver's delay per message, and the sender's sleep overshoot.
fn one_hop(messages: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (tx, rx) = mpsc::channel::<Instant>();
    let receiver = std::thread::spawn(move || rx.iter().map(|sent| sent.elapsed()).collect());
    let mut late = Vec::with_capacity(messages);
    for _ in 0..messages {
        let asleep = Instant::now();
        std::thread::sleep(GAP);
        late.push(asleep.elapsed().saturating_sub(GAP));
        tx.send(Instant::now()).expect("receiver runs");
    }
    drop(tx);
    (receiver.join().expect("receiver ends"), late)
}

/// `hops` threads in a row: the time from the first send to the last thread's receipt.
fn chain(messages: usize, hops: usize) -> Vec<Duration> {
    let (first, mut rx) = mpsc::channel::<Instant>();
    let mut relays = Vec::new();
    for _ in 1..hops {
        let (tx, next) = mpsc::channel::<Instant>();
        let from = std::mem::replace(&mut rx, next);
        relays.push(std::thread::spawn(move || {
            for sent in from {
                if tx.send(sent).is_err() {
                    break;
                }
            }
        }));
    }
    let last = std::thread::spawn(move || rx.iter().map(|sent| sent.elapsed()).collect());
    for _ in 0..messages {
        std::thread::sleep(GAP);
        first.send(Instant::now()).expect("chain runs");
    }
    drop(first);
    for relay in relays {
        relay.join().expect("relay ends");
    }
    last.join().expect("last ends")
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_micros();
    println!(
        "{what}: p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} messages)",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0),
        times.len()
    );
}

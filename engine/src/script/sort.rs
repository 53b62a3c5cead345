//! `array.sort(|a, b| ...)` (and `sort_by`) whose comparer's errors stop the sort.
//!
//! Rhai's own turns every error of the comparer into "unordered" and goes on comparing, so a
//! comparer past the run's time budget or operation limit (which Rhai reports as an error) kept
//! being called until the sort was done: one `sort` of 10,000 items with a slow comparer ran
//! 15 s past a 1 s budget. This one is the same stable sort with the same comparer contract
//! (an integer, negative/zero/positive, or a boolean "in order"), and its first error is the
//! run's error.

use std::cmp::Ordering;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, NativeCallContext};

/// Shadows Rhai's `sort(FnPtr)` and `sort_by(FnPtr)` for arrays.
pub fn register(engine: &mut Engine) {
    engine.register_fn("sort", sort_by);
    engine.register_fn("sort_by", sort_by);
}

fn sort_by(
    ctx: NativeCallContext,
    array: &mut Array,
    comparer: FnPtr,
) -> Result<(), Box<EvalAltResult>> {
    let compare = |a: &Dynamic, b: &Dynamic| -> Result<Ordering, Box<EvalAltResult>> {
        let v = comparer.call_raw(&ctx, None, [a.clone(), b.clone()])?;
        Ok(match (v.as_int(), v.as_bool()) {
            (Ok(n), _) => n.cmp(&0),
            (_, Ok(in_order)) => match in_order {
                true => Ordering::Less,
                false => Ordering::Greater,
            },
            // As Rhai does for a comparer that answers neither.
            _ => a.type_id().cmp(&b.type_id()),
        })
    };
    let items = std::mem::take(array);
    *array = merge_sort(items, &compare)?;
    Ok(())
}

/// A stable merge sort that stops at the first error of `compare`.
fn merge_sort<T, E>(
    mut items: Vec<T>,
    compare: &impl Fn(&T, &T) -> Result<Ordering, E>,
) -> Result<Vec<T>, E> {
    if items.len() <= 1 {
        return Ok(items);
    }
    let right = items.split_off(items.len() / 2);
    let left = merge_sort(items, compare)?;
    let right = merge_sort(right, compare)?;
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    while let (Some(l), Some(r)) = (left.peek(), right.peek()) {
        // Equal keeps the left one first: stable.
        let next = match compare(l, r)? {
            Ordering::Greater => right.next(),
            _ => left.next(),
        };
        merged.extend(next);
    }
    merged.extend(left);
    merged.extend(right);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_stably_and_stops_at_the_first_error() {
        let pairs: Vec<(i32, char)> = vec![(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e')];
        let by_key = |a: &(i32, char), b: &(i32, char)| Ok::<_, ()>(a.0.cmp(&b.0));
        let sorted = merge_sort(pairs.clone(), &by_key).unwrap();
        assert_eq!(sorted, [(1, 'b'), (1, 'e'), (2, 'd'), (3, 'a'), (3, 'c')]);
        let calls = std::cell::Cell::new(0);
        let failing = |_: &(i32, char), _: &(i32, char)| {
            calls.set(calls.get() + 1);
            Err::<Ordering, _>("stop")
        };
        assert_eq!(merge_sort(pairs, &failing), Err("stop"));
        assert_eq!(calls.get(), 1, "no comparison after the error");
    }
}

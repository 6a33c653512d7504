//! Best-effort wiping of the stack a key computation used.
//!
//! Rust never wipes a moved-from value or a callee's dead stack frame, so building a layer
//! state leaves copies of its initial keys on the thread's stack (the AES key schedules,
//! the seed halves) until later calls happen to overwrite them. Every later layer key
//! follows from the initial ones, so such a copy would undo the per-cell forward secrecy.
//! Long-lived state is on the heap (only pointers move); what remains is scrubbed here.

use zeroize::Zeroize;

/// How much stack below the caller is overwritten: more than the key-building calls use.
const SCRUB_LEN: usize = 8 * 1024;

/// Overwrites [`SCRUB_LEN`] bytes of this thread's stack below the caller's frame, where
/// the frames of the calls it just made (and of their siblings) lay.
#[inline(never)]
pub(crate) fn scrub_stack() {
    let mut area = [0u8; SCRUB_LEN];
    area.zeroize();
    core::hint::black_box(&area);
}

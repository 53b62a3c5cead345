//! Cutting a fixture down to the message a target names.

/// Issue 7's target message, "ADT^A01 with PID, PV1, NK1, AL1 and DG1": one of each, after MSH
/// and EVN. `adt_a01_full.hl7` has two NK1, AL1 and DG1 and also PD1, PV2 and IN1.
pub const ISSUE7: &[&str] = &["MSH", "EVN", "PID", "PV1", "NK1", "AL1", "DG1"];

/// The first segment of each type in `keep`, in the message's order (`\r`-separated HL7 v2).
pub fn first_of_each(raw: &[u8], keep: &[&str]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    for segment in raw.split(|&b| b == b'\r' || b == b'\n') {
        let Some(name) = segment.get(..3) else {
            continue;
        };
        if keep.iter().any(|k| k.as_bytes() == name) && !seen.contains(&name) {
            seen.push(name);
            out.extend_from_slice(segment);
            out.push(b'\r');
        }
    }
    out
}

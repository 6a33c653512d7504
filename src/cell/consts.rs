//! Sizes of the wire format. Every other length in the protocol derives from these.

/// Length of a circuit id on the wire.
pub const CIRC_ID_LEN: usize = 4;
/// Length of the command byte of a link cell.
pub const CMD_LEN: usize = 1;
/// Length of the body of every link cell. For RELAY and RELAY_EARLY cells the body is the
/// relay body: a 16-byte tag followed by a 496-byte payload.
pub const CELL_BODY_LEN: usize = 512;
/// Length of one link cell: circuit id, command, body.
pub const CELL_LEN: usize = CIRC_ID_LEN + CMD_LEN + CELL_BODY_LEN;
/// Length of the relay body that the layered relay crypto transforms.
pub const RELAY_BODY_LEN: usize = CELL_BODY_LEN;
/// Length of the tag at the front of the relay body (recognition and integrity).
pub const RELAY_TAG_LEN: usize = 16;
/// Length of the relay payload behind the tag (`R` of the UIV+ layer cipher,
/// docs/protocol.md §4.5).
pub const RELAY_PAYLOAD_LEN: usize = RELAY_BODY_LEN - RELAY_TAG_LEN;
/// Bytes of the relay payload before `data`: command (1), stream id (2), length (2).
pub const RELAY_HEADER_LEN: usize = 5;
/// Largest `data` field of one relay message.
pub const MAX_RELAY_DATA: usize = RELAY_PAYLOAD_LEN - RELAY_HEADER_LEN;

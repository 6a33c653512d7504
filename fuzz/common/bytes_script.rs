//! A script of reads over arbitrary input, shared by the `bytes` fuzz target and
//! tests/bytes_props.rs: every read either succeeds or fails without advancing, and the
//! fields read, written back with a `Writer`, give exactly the bytes consumed.

use allium::bytes::{Error, Reader, Writer};

/// Largest length a `u16`-prefixed read accepts in the script.
const U16_PREFIX_MAX: usize = 300;

/// One field as read.
#[derive(Debug)]
enum Field<'a> {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Raw(&'a [u8]),
    U8Prefixed(&'a [u8]),
    U16Prefixed(&'a [u8]),
    NulTerminated(&'a [u8]),
    Array([u8; 4]),
}

/// Runs `script` (one read per byte) over `input` and checks the properties; panics if one
/// fails. The first `script` byte whose read fails ends the run.
pub fn check(script: &[u8], input: &[u8]) {
    let mut r = Reader::new(input);
    let mut fields = Vec::new();
    for &op in script {
        let before = r.remaining();
        let arg = usize::from(op / 9);
        let field = match op % 9 {
            0 => r.u8("u8").map(Field::U8),
            1 => r.u16("u16").map(Field::U16),
            2 => r.u32("u32").map(Field::U32),
            3 => r.u64("u64").map(Field::U64),
            4 => r.take(arg, "raw").map(Field::Raw),
            5 => r.u8_prefixed("u8 prefixed").map(Field::U8Prefixed),
            6 => r
                .u16_prefixed("u16 prefixed", U16_PREFIX_MAX)
                .map(Field::U16Prefixed),
            7 => r
                .take_until(0, arg, "nul terminated")
                .map(Field::NulTerminated),
            _ => r.array::<4>("array").map(Field::Array),
        };
        match field {
            Ok(f) => fields.push(f),
            Err(e) => {
                assert_eq!(r.remaining(), before, "a failed read advanced: {e:?}");
                assert!(matches!(
                    e,
                    Error::Truncated { .. } | Error::LengthOutOfBounds { .. }
                ));
                break;
            }
        }
    }
    let consumed = r.consumed();
    assert_eq!(consumed + r.remaining(), input.len());
    let rest = r.clone().take_rest();
    assert_eq!(r.finish().is_ok(), rest.is_empty());

    // Written back into a growable buffer: exactly the consumed bytes.
    let mut out = Vec::new();
    let mut w = Writer::growable(&mut out);
    for f in &fields {
        write(&mut w, f).expect("a field that was read can be written");
    }
    assert_eq!(w.position(), consumed);
    assert_eq!(out, input.get(..consumed).expect("consumed <= len"));

    // Into a fixed buffer of that size: the same; one byte short: refused, no panic.
    let mut fixed = vec![0u8; consumed];
    let mut w = Writer::new(&mut fixed);
    for f in &fields {
        write(&mut w, f).expect("fits exactly");
    }
    assert_eq!(fixed, out);
    if let Some(short) = consumed.checked_sub(1) {
        let mut buf = vec![0u8; short];
        let mut w = Writer::new(&mut buf);
        let res: Result<(), Error> = fields.iter().try_for_each(|f| write(&mut w, f));
        assert!(matches!(res, Err(Error::TooLarge { .. })));
    }
}

fn write(w: &mut Writer<'_>, f: &Field<'_>) -> Result<(), Error> {
    match f {
        Field::U8(v) => w.u8(*v, "u8"),
        Field::U16(v) => w.u16(*v, "u16"),
        Field::U32(v) => w.u32(*v, "u32"),
        Field::U64(v) => w.u64(*v, "u64"),
        Field::Raw(b) => w.put(b, "raw"),
        Field::U8Prefixed(b) => w.u8_prefixed(b, "u8 prefixed"),
        Field::U16Prefixed(b) => w.u16_prefixed(b, "u16 prefixed"),
        Field::NulTerminated(b) => {
            w.put(b, "nul terminated")?;
            w.u8(0, "nul")
        }
        Field::Array(a) => w.write(a),
    }
}

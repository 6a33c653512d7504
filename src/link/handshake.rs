//! The link handshake: Noise XX inside LINK_INIT / LINK_RESP / LINK_FINISH cells, then one
//! encrypted NETINFO each way (docs/protocol.md §5).
//!
//! ```text
//! initiator -> responder  LINK_INIT    version 1 | noise msg 1 (-> e)
//! responder -> initiator  LINK_RESP    noise msg 2 (<- e, ee, s, es), payload = responder cert
//! initiator -> responder  LINK_FINISH  noise msg 3 (-> s, se), payload = initiator cert or empty
//! both                    NETINFO      first transport record each way
//! ```

use std::net::SocketAddr;

use ed25519_dalek::VerifyingKey;
use snow::{Builder, HandshakeState};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::auth::LinkAuth;
use super::cert::LinkKeyCert;
use super::error::{LinkError, LinkResult};
use super::peer::PeerKind;
use super::reader::RecordReader;
use super::record::{open_plaintext_record, plaintext_record, RecordCipher, RECORD_LEN};
use crate::cell::chan_contexts::DuringLinkHandshake;
use crate::cell::chan_msg::{BoundedBytes, MAX_LINK_HANDSHAKE_DATA};
use crate::cell::consts::CELL_LEN;
use crate::cell::{ChanCell, ChanMsg, LinkHandshake, Netinfo};

pub(crate) use super::version::{LINK_VERSION, NOISE_PARAMS, PROLOGUE};

/// The outcome of a successful handshake.
pub(crate) struct Established {
    /// Protects records we send.
    pub(crate) send: RecordCipher,
    /// Opens records we receive.
    pub(crate) recv: RecordCipher,
    /// Who the peer proved to be.
    pub(crate) peer: PeerKind,
    /// The peer's clock from its NETINFO (0 from a client).
    pub(crate) peer_timestamp: u64,
    /// Our address as the peer sees it, from its NETINFO.
    pub(crate) seen_as: SocketAddr,
}

/// What our NETINFO says: our clock (0 if we are a client) and the peer's TCP address.
#[derive(Clone, Copy)]
pub(crate) struct OurNetinfo {
    /// Our wall clock in Unix seconds, or 0 from a client (an exact clock fingerprints it).
    pub(crate) timestamp: u64,
    /// The address we see the peer at.
    pub(crate) peer_addr: SocketAddr,
}

fn builder_params() -> LinkResult<snow::params::NoiseParams> {
    Ok(NOISE_PARAMS.parse()?)
}

fn handshake_state(static_secret: &[u8; 32], initiator: bool) -> LinkResult<HandshakeState> {
    let params = builder_params()?;
    let b = Builder::new(params)
        .prologue(PROLOGUE)?
        .local_private_key(static_secret)?;
    Ok(if initiator {
        b.build_initiator()?
    } else {
        b.build_responder()?
    })
}

/// The peer's Noise static key, proved by the handshake so far.
fn remote_static(hs: &HandshakeState) -> LinkResult<[u8; 32]> {
    hs.get_remote_static()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or(LinkError::Protocol(
            "noise handshake did not yield a static key",
        ))
}

/// The two directional keys: (initiator → responder, responder → initiator).
fn split(hs: &mut HandshakeState) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let (a, b) = hs.dangerously_get_raw_split();
    (Zeroizing::new(a), Zeroizing::new(b))
}

/// Writes the next Noise message, carrying `payload`, into `buf` and returns it.
fn write_noise<'a>(
    hs: &mut HandshakeState,
    payload: &[u8],
    buf: &'a mut [u8],
) -> LinkResult<&'a [u8]> {
    let n = hs.write_message(payload, buf)?;
    buf.get(..n)
        .ok_or(LinkError::Protocol("noise message longer than its buffer"))
}

/// Reads the Noise message `msg`, decrypting its payload into `buf`, and returns the
/// payload.
fn read_noise<'a>(hs: &mut HandshakeState, msg: &[u8], buf: &'a mut [u8]) -> LinkResult<&'a [u8]> {
    let n = hs.read_message(msg, buf)?;
    buf.get(..n)
        .ok_or(LinkError::Protocol("noise payload longer than its buffer"))
}

/// Encodes a LINK_* cell carrying `data`.
fn handshake_cell(make: fn(LinkHandshake) -> ChanMsg, data: &[u8]) -> LinkResult<[u8; CELL_LEN]> {
    let data = BoundedBytes::<MAX_LINK_HANDSHAKE_DATA>::new(data.to_vec(), "data")?;
    Ok(ChanCell::channel(make(LinkHandshake { data }))?.encode()?)
}

/// Encodes our NETINFO cell.
fn netinfo_cell(ours: OurNetinfo) -> LinkResult<[u8; CELL_LEN]> {
    let msg = ChanMsg::Netinfo(Netinfo {
        timestamp: ours.timestamp,
        other_addr: ours.peer_addr,
    });
    Ok(ChanCell::channel(msg)?.encode()?)
}

/// Writes records and counts them.
async fn write_records(
    w: &mut OwnedWriteHalf,
    reader: &RecordReader,
    bytes: &[u8],
) -> LinkResult<()> {
    w.write_all(bytes).await?;
    reader
        .stats()
        .on_write((bytes.len() / RECORD_LEN) as u64, bytes.len());
    Ok(())
}

/// Reads one plaintext handshake record and returns the LINK_* payload, requiring the
/// command `want` (the handshake is strictly ordered).
async fn read_handshake(
    reader: &mut RecordReader,
    want: fn(DuringLinkHandshake) -> Option<LinkHandshake>,
) -> LinkResult<Vec<u8>> {
    let record = reader.next_record().await?.ok_or(LinkError::HandshakeEof)?;
    let cell = open_plaintext_record(record)?;
    let cell = ChanCell::<DuringLinkHandshake>::parse_typed(cell)?;
    want(cell.into_parts().1)
        .map(|h| h.data.into_vec())
        .ok_or(LinkError::Protocol(
            "unexpected cell during the link handshake",
        ))
}

/// Reads the peer's NETINFO, which must be its first encrypted record.
async fn read_netinfo(reader: &mut RecordReader, cipher: &mut RecordCipher) -> LinkResult<Netinfo> {
    let record = reader.next_record().await?.ok_or(LinkError::HandshakeEof)?;
    cipher.open(record)?;
    let cell = record
        .get(..CELL_LEN)
        .ok_or(LinkError::RecordLength(record.len()))?;
    match ChanCell::<DuringLinkHandshake>::parse_typed(cell)?
        .into_parts()
        .1
    {
        DuringLinkHandshake::Netinfo(n) => Ok(n),
        DuringLinkHandshake::LinkInit(_)
        | DuringLinkHandshake::LinkResp(_)
        | DuringLinkHandshake::LinkFinish(_) => {
            Err(LinkError::Protocol("first encrypted record is not NETINFO"))
        }
    }
}

/// Seals our NETINFO as a transport record.
fn sealed_netinfo(cipher: &mut RecordCipher, ours: OurNetinfo) -> LinkResult<[u8; RECORD_LEN]> {
    let mut rec = plaintext_record(&netinfo_cell(ours)?);
    cipher.seal(&mut rec)?;
    Ok(rec)
}

/// Runs the initiator's side. `our_auth` is `None` for a client, which then proves a fresh
/// random static key and no identity, and sends 0 as its NETINFO timestamp. `now`: our
/// wall clock in Unix seconds (certificate validity, a relay's NETINFO timestamp);
/// `peer_addr`: the responder's TCP address.
pub(crate) async fn initiate(
    reader: &mut RecordReader,
    writer: &mut OwnedWriteHalf,
    expected: &VerifyingKey,
    our_auth: Option<&LinkAuth>,
    now: u64,
    peer_addr: SocketAddr,
) -> LinkResult<Established> {
    let ours = OurNetinfo {
        timestamp: if our_auth.is_some() { now } else { 0 },
        peer_addr,
    };
    let secret = match our_auth {
        Some(auth) => auth.static_secret_bytes(),
        None => Zeroizing::new(StaticSecret::random_from_rng(&mut rand::rng()).to_bytes()),
    };
    let mut hs = handshake_state(&secret, true)?;
    drop(secret);
    let mut msg = Zeroizing::new([0u8; MAX_LINK_HANDSHAKE_DATA]);

    // Message 1: version byte, then the Noise message (an ephemeral key, empty payload).
    let noise1 = write_noise(&mut hs, &[], msg.as_mut_slice())?;
    let init = handshake_cell(ChanMsg::LinkInit, &[&[LINK_VERSION], noise1].concat())?;
    write_records(writer, reader, &plaintext_record(&init)).await?;

    // Message 2: the responder's static key and certificate.
    let resp = read_handshake(reader, |m| match m {
        DuringLinkHandshake::LinkResp(h) => Some(h),
        DuringLinkHandshake::LinkInit(_)
        | DuringLinkHandshake::LinkFinish(_)
        | DuringLinkHandshake::Netinfo(_) => None,
    })
    .await?;
    // A one-byte LINK_RESP is a responder refusing our version and naming its own (a Noise
    // message 2 is 200 bytes): say so, rather than fail as a broken Noise message.
    if let [theirs] = resp.as_slice() {
        return Err(LinkError::VersionRefused {
            ours: LINK_VERSION,
            theirs: *theirs,
        });
    }
    let mut payload = Zeroizing::new([0u8; MAX_LINK_HANDSHAKE_DATA]);
    let cert = LinkKeyCert::parse(read_noise(&mut hs, &resp, payload.as_mut_slice())?)?;
    let identity = cert.verify_expecting(&remote_static(&hs)?, now, expected)?;

    // Message 3: our static key, and our certificate if we are a relay.
    let our_cert = our_auth.map(|a| a.cert().encode()).transpose()?;
    let noise3 = write_noise(
        &mut hs,
        our_cert.as_ref().map_or(&[][..], |c| &c[..]),
        msg.as_mut_slice(),
    )?;
    let finish = handshake_cell(ChanMsg::LinkFinish, noise3)?;

    let (i2r, r2i) = split(&mut hs);
    let mut send = RecordCipher::new(&i2r);
    let mut recv = RecordCipher::new(&r2i);

    // LINK_FINISH and our NETINFO leave in one write.
    let mut out = [0u8; 2 * RECORD_LEN];
    let (a, b) = out.split_at_mut(RECORD_LEN);
    a.copy_from_slice(&plaintext_record(&finish));
    b.copy_from_slice(&sealed_netinfo(&mut send, ours)?);
    write_records(writer, reader, &out).await?;

    let theirs = read_netinfo(reader, &mut recv).await?;
    Ok(Established {
        send,
        recv,
        peer: PeerKind::Relay(identity),
        peer_timestamp: theirs.timestamp,
        seen_as: theirs.other_addr,
    })
}

/// Runs the responder's side (always a relay: it sends its clock); `now` and `peer_addr`
/// (the initiator's TCP address) as for [`initiate`].
pub(crate) async fn respond(
    reader: &mut RecordReader,
    writer: &mut OwnedWriteHalf,
    our_auth: &LinkAuth,
    now: u64,
    peer_addr: SocketAddr,
) -> LinkResult<Established> {
    let ours = OurNetinfo {
        timestamp: now,
        peer_addr,
    };
    let mut hs = handshake_state(&our_auth.static_secret_bytes(), false)?;
    let mut msg = Zeroizing::new([0u8; MAX_LINK_HANDSHAKE_DATA]);
    let mut payload = Zeroizing::new([0u8; MAX_LINK_HANDSHAKE_DATA]);

    // Message 1.
    let init = read_handshake(reader, |m| match m {
        DuringLinkHandshake::LinkInit(h) => Some(h),
        DuringLinkHandshake::LinkResp(_)
        | DuringLinkHandshake::LinkFinish(_)
        | DuringLinkHandshake::Netinfo(_) => None,
    })
    .await?;
    let (&version, noise1) = init
        .split_first()
        .ok_or(LinkError::Protocol("empty LINK_INIT"))?;
    if version != LINK_VERSION {
        // Tell the initiator which version we speak, so both ends can log a clear error.
        let refusal = handshake_cell(ChanMsg::LinkResp, &[LINK_VERSION])?;
        write_records(writer, reader, &plaintext_record(&refusal)).await?;
        return Err(LinkError::UnsupportedVersion(version));
    }
    if hs.read_message(noise1, payload.as_mut_slice())? != 0 {
        return Err(LinkError::Protocol("LINK_INIT carries a payload"));
    }

    // Message 2: our static key and certificate.
    let noise2 = write_noise(&mut hs, &our_auth.cert().encode()?, msg.as_mut_slice())?;
    let resp = handshake_cell(ChanMsg::LinkResp, noise2)?;
    write_records(writer, reader, &plaintext_record(&resp)).await?;

    // Message 3: the initiator's static key, and its certificate if it is a relay.
    let finish = read_handshake(reader, |m| match m {
        DuringLinkHandshake::LinkFinish(h) => Some(h),
        DuringLinkHandshake::LinkInit(_)
        | DuringLinkHandshake::LinkResp(_)
        | DuringLinkHandshake::Netinfo(_) => None,
    })
    .await?;
    let cert = read_noise(&mut hs, &finish, payload.as_mut_slice())?;
    let peer = if cert.is_empty() {
        PeerKind::Client
    } else {
        let cert = LinkKeyCert::parse(cert)?;
        PeerKind::Relay(cert.verify(&remote_static(&hs)?, now)?)
    };

    let (i2r, r2i) = split(&mut hs);
    let mut send = RecordCipher::new(&r2i);
    let mut recv = RecordCipher::new(&i2r);

    write_records(writer, reader, &sealed_netinfo(&mut send, ours)?).await?;
    let theirs = read_netinfo(reader, &mut recv).await?;
    Ok(Established {
        send,
        recv,
        peer,
        peer_timestamp: theirs.timestamp,
        seen_as: theirs.other_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message sizes docs/protocol.md §5.3 states.
    #[test]
    fn noise_message_sizes_match_the_spec() {
        for (initiator_cert, msg3_len) in [(true, 168), (false, 64)] {
            let mut i = handshake_state(&[1; 32], true).unwrap();
            let mut r = handshake_state(&[2; 32], false).unwrap();
            let (mut buf, mut pl) = ([0u8; 600], [0u8; 600]);
            let n1 = i.write_message(&[], &mut buf).unwrap();
            assert_eq!(n1, 32);
            assert_eq!(r.read_message(&buf[..n1], &mut pl).unwrap(), 0);
            let n2 = r.write_message(&[9; 104], &mut buf).unwrap();
            assert_eq!(n2, 200);
            assert_eq!(i.read_message(&buf[..n2], &mut pl).unwrap(), 104);
            let payload: &[u8] = if initiator_cert { &[9; 104] } else { &[] };
            let n3 = i.write_message(payload, &mut buf).unwrap();
            assert_eq!(n3, msg3_len);
            r.read_message(&buf[..n3], &mut pl).unwrap();
            assert_eq!(split(&mut i).0, split(&mut r).0);
            assert!(n3 <= MAX_LINK_HANDSHAKE_DATA && n2 <= MAX_LINK_HANDSHAKE_DATA);
        }
    }

    /// Transport records, rekeys included, are exactly what a Noise CipherState produces
    /// (EncryptWithAd with empty ad, and REKEY() with its nonce carrying on): snow's
    /// transport mode, an independent implementation, seals the same bytes.
    #[test]
    fn records_and_rekeys_match_a_noise_transport() {
        let mut i = handshake_state(&[1; 32], true).unwrap();
        let mut r = handshake_state(&[2; 32], false).unwrap();
        let (mut buf, mut pl) = ([0u8; 600], [0u8; 600]);
        let n = i.write_message(&[], &mut buf).unwrap();
        r.read_message(&buf[..n], &mut pl).unwrap();
        let n = r.write_message(&[], &mut buf).unwrap();
        i.read_message(&buf[..n], &mut pl).unwrap();
        let n = i.write_message(&[], &mut buf).unwrap();
        r.read_message(&buf[..n], &mut pl).unwrap();

        let (i2r, r2i) = split(&mut i);
        let mut send = RecordCipher::new(&i2r);
        let mut recv = RecordCipher::new(&r2i);
        let mut noise_i = i.into_transport_mode().unwrap();
        let mut noise_r = r.into_transport_mode().unwrap();
        for step in 0..40u8 {
            let cell = [step; CELL_LEN];
            let mut ours = plaintext_record(&cell);
            send.seal(&mut ours).unwrap();
            let mut theirs = [0u8; RECORD_LEN];
            assert_eq!(
                noise_i.write_message(&cell, &mut theirs).unwrap(),
                RECORD_LEN
            );
            assert_eq!(ours, theirs, "initiator record {step}");

            let mut ours = plaintext_record(&cell);
            recv.seal(&mut ours).unwrap();
            assert_eq!(
                noise_r.write_message(&cell, &mut theirs).unwrap(),
                RECORD_LEN
            );
            assert_eq!(ours, theirs, "responder record {step}");

            // Rekey the two directions at different points.
            if step % 3 == 2 {
                send.rekey().unwrap();
                noise_i.rekey_outgoing();
            }
            if step % 7 == 6 {
                recv.rekey().unwrap();
                noise_r.rekey_outgoing();
            }
        }
    }
}

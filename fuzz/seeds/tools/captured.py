#!/usr/bin/env python3
"""Seeds from captured traffic. Reads a pcap of loopback UDP, taken with

    tcpdump -i lo -U -w e2e.pcap udp    # while `cargo test --test e2e udp::` runs

and writes under SEEDS_DIR: one STUN message of each kind to stun_scan_decode/, one
ChannelData message of each channel and length to channel_data/, a client session back
to back to stream_framer/, and that session as core_sequence records (credentials
stripped for the harness to add its own, peers moved to its allowed peer) plus the
RFC 5769 requests to core_sequence/. Run from the repository root:

    python3 fuzz/seeds/tools/captured.py e2e.pcap fuzz/seeds
"""
import binascii
import os
import struct
import sys

MAGIC_COOKIE = b'\x21\x12\xa4\x42'
METHODS = {1: 'binding', 3: 'allocate', 4: 'refresh', 6: 'send', 7: 'data',
           8: 'createpermission', 9: 'channelbind'}
CLASSES = {0: 'request', 1: 'indication', 2: 'success', 3: 'error'}
# USERNAME, REALM, NONCE, MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT
CREDENTIALS = (0x0006, 0x0014, 0x0015, 0x0008, 0x001c, 0x8028)
XOR_PEER_ADDRESS, CHANNEL_NUMBER, ERROR_CODE = 0x0012, 0x000c, 0x0009


def udp_payloads(path):
    """(is IPv6, UDP payload) of each packet of an Ethernet-framed pcap."""
    d = open(path, 'rb').read()
    assert struct.unpack('<I', d[:4])[0] == 0xa1b2c3d4, 'expected a little-endian pcap'
    off = 24
    while off < len(d):
        incl = struct.unpack('<I', d[off + 8:off + 12])[0]
        pkt = d[off + 16:off + 16 + incl]
        off += 16 + incl
        ethertype, ip = struct.unpack('>H', pkt[12:14])[0], pkt[14:]
        if ethertype == 0x0800:
            proto, l4 = ip[9], ip[(ip[0] & 15) * 4:]
        elif ethertype == 0x86dd:
            proto, l4 = ip[6], ip[40:]
        else:
            continue
        if proto == 17:
            yield ethertype == 0x86dd, l4[8:struct.unpack('>H', l4[4:6])[0]]


def attrs(msg):
    i = 20
    while i + 4 <= len(msg):
        kind, length = struct.unpack('>HH', msg[i:i + 4])
        yield kind, msg[i + 4:i + 4 + length]
        i += 4 + ((length + 3) & ~3)


def stun_kind(msg):
    """'allocate-request-mi', 'send-indication', 'allocate-error-401', ... or None."""
    if len(msg) < 20 or msg[0] >> 6 != 0 or msg[4:8] != MAGIC_COOKIE:
        return None
    t = struct.unpack('>H', msg[:2])[0]
    method = (t & 0xf) | ((t >> 1) & 0x70) | ((t >> 2) & 0xf80)
    cls = CLASSES[((t >> 4) & 1) | ((t >> 7) & 2)]
    name = f'{METHODS.get(method, hex(method))}-{cls}'
    found = dict(attrs(msg))
    if cls == 'error' and ERROR_CODE in found and len(found[ERROR_CODE]) >= 4:
        e = found[ERROR_CODE]
        name += f'-{e[2] * 100 + e[3]}'
    elif cls == 'request' and 0x0008 in found:
        name += '-mi'
    return name


def channel_data(msg):
    """A whole ChannelData message (not a peer's payload that happens to start 01)."""
    if len(msg) < 4:
        return False
    channel, length = struct.unpack('>HH', msg[:4])
    return 0x4000 <= channel <= 0x4fff and 4 + length <= len(msg) <= 4 + length + 3


def rebuild(msg, peer=None):
    """`msg` without its credentials, XOR-PEER-ADDRESS set to `peer`, length fixed."""
    body = b''
    for kind, v in attrs(msg):
        if kind in CREDENTIALS:
            continue
        if kind == XOR_PEER_ADDRESS and peer is not None:
            ip, port = peer
            v = (struct.pack('>BBH', 0, 1, port ^ 0x2112)
                 + bytes(a ^ b for a, b in zip(ip, MAGIC_COOKIE)))
        body += struct.pack('>HH', kind, len(v)) + v + b'\0' * (-len(v) % 4)
    return msg[:2] + struct.pack('>H', len(body)) + msg[4:20] + body


def main(pcap, out):
    first, channels = {}, {}
    for v6, msg in udp_payloads(pcap):
        kind = stun_kind(msg)
        if kind:
            first.setdefault(kind + ('-ipv6' if v6 else ''), msg)
        elif channel_data(msg):
            channel, length = struct.unpack('>HH', msg[:4])
            channels.setdefault(f'captured-channel-{channel:04x}-{length}b', msg)

    def write(target, name, data):
        os.makedirs(os.path.join(out, target), exist_ok=True)
        with open(os.path.join(out, target, name), 'wb') as f:
            f.write(data)
        print(target, name, len(data))

    for kind in ['binding-request', 'binding-success', 'allocate-request',
                 'allocate-error-401', 'allocate-request-mi', 'allocate-request-mi-ipv6',
                 'allocate-success', 'allocate-success-ipv6', 'allocate-error-437',
                 'refresh-request-mi', 'createpermission-request-mi',
                 'createpermission-error-403', 'channelbind-request-mi',
                 'channelbind-request-mi-ipv6', 'send-indication', 'data-indication']:
        write('stun_scan_decode', 'captured-' + kind, first[kind])
    for name, msg in channels.items():
        write('channel_data', name, msg)

    # stream_framer: [capacity][8 chunk sizes][stream], ChannelData padded as on streams.
    chan = next(m for m in channels.values() if len(m) > 4)
    session = (first['allocate-request'] + first['allocate-request-mi']
               + first['createpermission-request-mi'] + first['channelbind-request-mi']
               + chan + b'\0' * (-len(chan) % 4) + first['send-indication']
               + first['refresh-request-mi'])
    sizes = bytes([1, 3, 20, 64, 255, 7, 100, 13])
    write('stream_framer', 'captured-session', b'\x00' + sizes + session)
    write('stream_framer', 'captured-session-growing', b'\x05' + sizes + session)

    # core_sequence: records [kind][arg][len u16][bytes] (fuzz_targets/core_sequence.rs).
    peer = (bytes([198, 51, 100, 1]), 5000)

    def rec(kind, arg, b):
        return struct.pack('>BBH', kind, arg, len(b)) + b

    chanbind = rebuild(first['channelbind-request-mi'], peer)
    number = struct.unpack('>H', dict(attrs(chanbind))[CHANNEL_NUMBER][:2])[0]
    data = next((m for m in channels.values() if m[:2] == struct.pack('>H', number)
                 and len(m) > 4), struct.pack('>HH', number, 5) + b'hello')
    seq = (rec(0, 0, first['allocate-request'])          # 401 with a nonce
           + rec(3, 4, rebuild(first['allocate-request-mi']))  # allocated
           + rec(3, 0, rebuild(first['createpermission-request-mi'], peer))
           + rec(3, 0, chanbind)
           + rec(0, 0, rebuild(first['send-indication'], peer))
           + rec(1, 0, b'captured-peer-reply')
           + rec(0, 0, data)
           + rec(2, 200, b'')
           + rec(3, 0, rebuild(first['refresh-request-mi']))  # lifetime 0
           + rec(2, 255, b'') + rec(2, 255, b''))
    write('core_sequence', 'captured-session', seq)
    rfc = []
    for name in ['rfc5769-2.1-request', 'rfc5769-2.4-request-long-term']:
        text = ''.join(l for l in open(f'tests/data/{name}.hex') if not l.startswith('#'))
        rfc.append(binascii.unhexlify(''.join(text.split())))
    write('core_sequence', 'rfc5769-requests',
          rec(0, 0, rfc[0]) + rec(0, 1, rfc[1]) + rec(3, 0, rfc[0]))


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])

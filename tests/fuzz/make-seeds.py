#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/ (checked in; rerun only to change them).

    tests/fuzz/make-seeds.py BUILD_DIR     (needs BUILD_DIR/tools/oag-gen-model)

Seeds are valid inputs (the fuzzer mutates from there) plus a few near misses."""
import os, struct, subprocess, sys, tempfile

B = sys.argv[1] if len(sys.argv) > 1 else "build"
HERE = os.path.dirname(os.path.abspath(__file__))
C = os.path.join(HERE, "corpus")

def put(kind, name, data):
    os.makedirs(os.path.join(C, kind), exist_ok=True)
    with open(os.path.join(C, kind, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# ---- model: u16 config length | config.json | model.safetensors
def model(name, args):
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([os.path.join(B, "tools", "oag-gen-model"), "--out", d, "--seed", "3",
                        "--name", name] + args, check=True, stdout=subprocess.DEVNULL)
        cfg = open(os.path.join(d, "config.json"), "rb").read()
        st = open(os.path.join(d, "model.safetensors"), "rb").read()
    return struct.pack("<H", len(cfg)) + cfg + st

put("model", "mlp-f32", model("a", ["--input", "4", "--hidden", "8", "--output", "3"]))
put("model", "mlp-f16-ln-softmax", model("b", ["--input", "3", "--hidden", "5", "--output", "2",
    "--dtype", "float16", "--layernorm", "--softmax", "--act", "gelu", "--layers", "3"]))
put("model", "linear-bf16-nobias", model("c", ["--input", "2", "--output", "2", "--layers", "1",
    "--dtype", "bfloat16", "--no-bias"]))
m = model("d", ["--input", "2", "--output", "2", "--layers", "1"])
put("model", "truncated-data", m[:-3])
put("model", "header-len-huge", m[:2 + m[0] + (m[1] << 8)] + struct.pack("<Q", 1 << 62))

# ---- config: the INI file
put("config", "full", """# a full configuration
[supervisor]
name = fuzz
agents = 4
backend = identity
max-batch = 64
max-delay-us = 200
preferred-batch = 16
preferred-batch = 32
max-payload = 8192
ring-slots = 128
max-lanes = 64
max-queue = 1024
spin-us = 10
restart-delay-ms = 50
restart-max-ms = 1000
allow-uid = 1000
socket-mode = 0660
in-order = true
log-max-bytes = 4M
metrics = 127.0.0.1:9464
quiet = false
[fleet]
command = /bin/agent --flag 'a b' "c \\" d" e\\ f ; comment
""")
put("config", "minimal", "[supervisor]\nbackend = identity\n")
put("config", "bad-section", "[nope]\nx = 1\n")
put("config", "continuation", "[supervisor]\nname = a\n  name = b\n")
put("config", "bom-crlf", "\ufeff[supervisor]\r\nagents = 0\r\n")

# ---- lane: u8 geometry, u8 slots, then ops (opcode % 7, operands)
def op(code, *parts):
    return bytes([code]) + b"".join(parts)
u32 = lambda v: struct.pack("<I", v & 0xffffffff)
def slot(which, ticket, length):
    return bytes([which]) + struct.pack("<QIiIB3xQ", ticket, length, 0, 0, 0, 0)
put("lane", "normal", bytes([6, 2]) + op(2, slot(0, 1, 16)) + op(2, slot(2, 2, 40)) +
    op(0, u32(2)) + op(3) + op(4) + op(1, u32(2)) + op(6) + op(5, u32(2), b"\x03", b"\x01" * 8))
put("lane", "bad-len", bytes([1, 1]) + op(2, slot(0, 1, 1 << 20)) + op(0, u32(1)) + op(3))
put("lane", "future-prod", bytes([0, 0]) + op(0, u32(1000)) + op(3))
put("lane", "backwards-cons", bytes([0, 0]) + op(0, u32(1)) + op(3) + op(4) + op(1, u32(0xffffffff)) + op(4))
put("lane", "latch-odd", bytes([0, 3]) + op(5, u32(0xffffffff), b"\x00", b"\xff" * 8))

ABI = 4
def geom(max_payload, slots):
    """src/shm/lane.c, ABI 3: headers apart from payloads, indices grouped by writer."""
    up = lambda x, a: (x + a - 1) & ~(a - 1)
    pay_stride = up(max_payload, 64)
    state_off = 256
    ctl_off = up(state_off + 192, 64)
    sub_off = up(ctl_off + 256, 64)
    cmp_off = sub_off + slots * 32
    sub_pay = up(cmp_off + slots * 32, 4096)
    cmp_pay = up(sub_pay + slots * pay_stride, 4096)
    size = up(cmp_pay + slots * pay_stride, 4096)
    return pay_stride, state_off, ctl_off, sub_off, cmp_off, sub_pay, cmp_pay, size

def lane_hdr(max_payload, slots, lane_id=5, gen=3, tweak=None):
    ps, so, co_, su, cm, sp, cp, size = geom(max_payload, slots)
    f = dict(magic=0x4f41474c, abi=ABI, lane_id=lane_id, gen=gen, size=size, ps=ps,
             mp=max_payload, sub=slots, cmp=slots, so=so, ctl=co_, su=su, co=cm, sp=sp, cp=cp,
             shard=0)
    if tweak:
        f.update(tweak)
    h = struct.pack("<IIIIQIIIIIIIIQQQQ", f["magic"], f["abi"], f["lane_id"], f["gen"], f["size"],
                    f["ps"], f["mp"], f["sub"], f["cmp"], f["so"], f["ctl"], 0, f["shard"], f["su"],
                    f["co"], f["sp"], f["cp"])
    return h + b"\0" * (256 - len(h)), size

h, size = lane_hdr(64, 4)
put("lane", "hdr-ok", bytes([0x80, 0]) + h + struct.pack("<Q", size))
h2, _ = lane_hdr(64, 4, tweak=dict(su=8192))
put("lane", "hdr-bad-off", bytes([0x80, 0]) + h2 + struct.pack("<Q", size) + h + struct.pack("<Q", size - 1))

# ---- proto: struct oag_welcome | u8 flags | u16 wlen | u32 region size | region (1456) |
#             u32 lane size | lane header (256) | u32 completion prod | slot header (32)
REGION = 1456
def welcome(err=0, abi=ABI, lane_id=5, gen=3, lane_size=0, region_size=4096, reason=b""):
    return struct.pack("<IIiIIIQQ", 0x4f414748, 1, err, abi, lane_id, gen, lane_size,
                       region_size) + reason.ljust(160, b"\0")
def region(magic=0x4f414752, abi=ABI, results_off=0, results_size=0, nshards=1):
    """struct oag_region_hdr: magic, abi, size, sup_pid, global_off, start_ns, results_off/size,
    nshards (ABI 4)"""
    h = struct.pack("<IIQIIQQQI", magic, abi, 4096, 1, 1088, 0, results_off, results_size,
                    nshards)
    return h + b"\0" * (REGION - len(h))
def proto(w, flags, rsize, reg, lsize, lh, prod=0, sl=b"\0" * 32, wlen=0):
    return w + struct.pack("<BHI", flags, wlen, rsize) + reg + struct.pack("<I", lsize) + lh + \
        struct.pack("<I", prod) + sl
h, size = lane_hdr(64, 4)
ok = proto(welcome(lane_size=size), 0x0f, 4096, region(), size, h, 1,
           struct.pack("<QIiIB3xQ", 7, 16, 0, 0, 0, 0))
put("proto", "ok-one-completion", ok)
# a result in the region's shared result area (--shared-results): OAG_CMP_SHARED, offset 16
def cslot(ticket, length, flags=0, off=0):
    return struct.pack("<QIiIBB2xQ", ticket, length, 0, 0, 0, flags, off)
put("proto", "ok-shared-result", proto(welcome(lane_size=size), 0x0f, 4096,
    region(results_off=2048, results_size=2048), size, h, 1, cslot(7, 16, 1, 16)))
put("proto", "shared-result-outside", proto(welcome(lane_size=size), 0x0f, 4096,
    region(results_off=2048, results_size=2048), size, h, 1, cslot(7, 16, 1, 2040)))
put("proto", "results-area-past-region", proto(welcome(lane_size=size), 0x0f, 4096,
    region(results_off=4000, results_size=2048), size, h))
# a lane served by data thread 1 of 2 (ABI 4), and one naming a thread the region lacks
h1, _ = lane_hdr(64, 4, tweak=dict(shard=1))
put("proto", "ok-second-shard", proto(welcome(lane_size=size), 0x0f, 4096, region(nshards=2),
    size, h1, 1, cslot(7, 16)))
put("proto", "shard-out-of-range", proto(welcome(lane_size=size), 0x0f, 4096, region(nshards=1),
    size, h1, 1, cslot(7, 16)))
put("proto", "ok-len-huge", proto(welcome(lane_size=size), 0x0f, 4096, region(), size, h, 1,
    struct.pack("<QIiIB3xQ", 7, 1 << 30, 0, 0, 0, 0)))
put("proto", "refused", proto(welcome(err=-13, reason=b"not allowed"), 0, 0, region(), 0, h))
put("proto", "three-fds", proto(welcome(lane_size=size), 0x07, 4096, region(), size, h))
put("proto", "five-fds", proto(welcome(lane_size=size), 0x1f, 4096, region(), size, h))
put("proto", "region-small", proto(welcome(lane_size=size), 0x0f, 100, region(), size, h))
put("proto", "lane-size-mismatch", proto(welcome(lane_size=size), 0x0f, 4096, region(), size + 4096, h))
put("proto", "truncated-welcome", proto(welcome(lane_size=size), 0x0f, 4096, region(), size, h, wlen=20))
put("proto", "no-answer", proto(welcome(lane_size=size), 0x2f, 4096, region(), size, h))

# ---- hello: the first message of a connection (struct oag_hello, 280 bytes)
def hello(kind, cmd=b"", agent_id=-1, abi=ABI, magic=0x4f414748):
    return struct.pack("<IIIiII", magic, abi, kind, agent_id, 4242, 0) + cmd.ljust(256, b"\0")
for nm, c in [("status", b"status"), ("status-json", b"status --json"), ("trace", b"trace 5 --json"),
              ("trace-bad", b"trace 0 x"), ("scale", b"scale 3"), ("reload", b"reload /nonexistent"),
              ("unknown", b"frobnicate")]:
    put("hello", "ctl-" + nm, hello(2, c))
put("hello", "agent", hello(1))
put("hello", "agent-id-huge", hello(1, agent_id=1 << 29))
put("hello", "bad-abi", hello(1, abi=ABI - 1))
put("hello", "bad-kind", hello(7))
put("hello", "short", hello(1)[:10])

# ---- wire: u8 max_payload selector (16 << (b % 12)), then one frame (src/net/wire.h)
def frame(typ, body=b"", count=0, seq=1, ack=0, version=1, magic=0x4e47414f, body_len=None):
    bl = len(body) if body_len is None else body_len
    return struct.pack("<IBBHQQQII", magic, version, typ, 0, 0x1234, seq, ack, count, bl) + body
def task(t, data, timeout=0, prio=0):
    return struct.pack("<QIIB7x", t, timeout, len(data), prio) + data
def result(t, data, status=0):
    return struct.pack("<QiI", t, status, len(data)) + data
sel = bytes([4])  # max_payload 256
put("wire", "tasks", sel + frame(3, task(1, b"a" * 16) + task(2, b"b" * 40, 1000, 2), 2))
put("wire", "results", sel + frame(4, result(1, b"x" * 16) + result(2, b"", -5), 2))
put("wire", "hello", sel + frame(1, seq=0))
put("wire", "ack", sel + frame(5, seq=0, ack=7))
put("wire", "welcome", sel + frame(2, struct.pack("<IIIIIIQ", 256, 1024, 0, 0, 1 << 20, 0, 99)
                                    + b"identity".ljust(32, b"\0"), seq=0))
put("wire", "error", sel + frame(6, struct.pack("<iI", -13, 9) + b"not+allow", seq=0))
put("wire", "task-too-big", sel + frame(3, task(1, b"z" * 300), 1))
put("wire", "count-lies", sel + frame(3, task(1, b"a" * 16), 3))
put("wire", "bodylen-lies", sel + frame(4, result(1, b"x" * 16), 1, body_len=1000))
put("wire", "version-2", sel + frame(1, version=2, seq=0))

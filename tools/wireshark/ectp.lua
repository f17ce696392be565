-- ectp.lua: a Wireshark / tshark dissector for ECTP-3 (ITU-T X.607 | ISO/IEC 14476-3) as
-- libectp puts it on the wire (docs/wire-format.md, src/wire/).
--
--   tshark -X lua_script:tools/wireshark/ectp.lua -r capture.pcap
--   (or copy this file into ~/.local/lib/wireshark/plugins/)
--
-- One UDP datagram is one ECTP packet: a 16-byte base header, a chain of extension elements,
-- then user data. (A capture on the sending host may show a UDP GSO message as one datagram
-- holding several packets: each is then dissected, see gso_segments.) The dissector registers on the UDP port of the preference "ectp.udp_port"
-- (the group port; default 5000, gserv's and gclnt's default) and as a heuristic dissector on
-- UDP, which claims a datagram only when its header is consistent: at least 16 bytes, Version
-- 0, CT duplex (binary 10), a packet type 1-18 and a Payload Length equal to the datagram's
-- length minus 16. What the library's parser would reject (docs/wire-format.md, "How a datagram
-- is rejected") is shown with the expert item "ectp.malformed" (group Malformed, severity
-- Error) and its reason; every read is checked against the bytes captured, so a short or
-- corrupt datagram never raises a Lua error. Field names: tools/wireshark/README.md.
--
-- Tested with tshark 4.0 (Lua 5.2). Plain arithmetic, no bit library, so that builds with
-- another Lua (5.1 to 5.4) should run it too.

local ectp = Proto("ectp", "ECTP-3 (Enhanced Communications Transport Protocol, X.607)")

local HEADER_LEN = 16
local PSN_SPACE = 4294967295 -- PSNs run 1..2^32-1 and wrap to 1: arithmetic modulo 2^32-1

-- ---- value strings

local type_acronyms = {
    [1] = "CCR", [2] = "CCC", [3] = "TJR", [4] = "TJC", [5] = "DATA", [6] = "NDATA",
    [7] = "RDATA", [8] = "ACK", [9] = "HB", [10] = "HBACK", [11] = "LJR", [12] = "LJC",
    [13] = "ULR", [14] = "CTR", [15] = "TGR", [16] = "TGC", [17] = "TRR", [18] = "TRC",
}
local type_names = {
    [1] = "Connection Creation Request", [2] = "Connection Creation Confirm",
    [3] = "Tree Join Request", [4] = "Tree Join Confirm", [5] = "Data", [6] = "Null Data",
    [7] = "Retransmission Data", [8] = "Acknowledgement", [9] = "Heartbeat",
    [10] = "Heartbeat Acknowledgement", [11] = "Late Join Request", [12] = "Late Join Confirm",
    [13] = "User Leave Request", [14] = "Connection Termination Request",
    [15] = "Token Get Request", [16] = "Token Get Confirm", [17] = "Token Return Request",
    [18] = "Token Return Confirm",
}
local vs_type = {}
for code, acronym in pairs(type_acronyms) do
    vs_type[code] = acronym .. " (" .. type_names[code] .. ")"
end

local E_CONNECTION, E_ACK, E_MEMBERSHIP, E_TIMESTAMP = 1, 2, 3, 4
local E_QOS, E_ADDRESS, E_KEY, E_AUTH, E_RATE, E_REPORT = 5, 6, 7, 8, 9, 10
local vs_element = {
    [0] = "none", [1] = "Connection", [2] = "Acknowledgement", [3] = "Membership",
    [4] = "Timestamp", [5] = "QoS (ECTP-4, not supported)", [6] = "Address", [7] = "Key",
    [8] = "Authentication", [9] = "Rate", [10] = "Rate Report",
}
-- Fixed lengths; Acknowledgement and Address have a variable part.
local element_len = {
    [E_CONNECTION] = 12, [E_MEMBERSHIP] = 12, [E_TIMESTAMP] = 12, [E_KEY] = 52,
    [E_AUTH] = 32, [E_RATE] = 28, [E_REPORT] = 32,
}

local vs_ct = { [0] = "invalid (0)", [1] = "simplex (ECTP-1, rejected)", [2] = "duplex (ECTP-3)",
                [3] = "N-plex (rejected)" }
local vs_tco = { [0] = "flat", [1] = "tree", [2] = "invalid", [3] = "invalid" }
local vs_ro = { [0] = "unreliable", [1] = "semi-reliable", [2] = "reliable", [3] = "invalid" }
local vs_family = { [4] = "IPv4", [6] = "IPv6" }
local vs_kind = { [1] = "join key", [2] = "group key", [3] = "member key", [4] = "link key" }
local vs_checksum_status = { [0] = "Bad", [1] = "Good", [2] = "Unverified" }

-- ---- fields (README.md lists them)

local pf = {
    -- base header
    ne = ProtoField.uint8("ectp.ne", "Next Element", base.DEC, vs_element, 0xF0),
    version = ProtoField.uint8("ectp.version", "Version", base.DEC, nil, 0x0C),
    ct = ProtoField.uint8("ectp.ct", "Connection Type", base.DEC, vs_ct, 0x03),
    type = ProtoField.uint8("ectp.type", "Packet Type", base.DEC, vs_type),
    type_name = ProtoField.string("ectp.type_name", "Packet Type acronym"),
    checksum = ProtoField.uint16("ectp.checksum", "Checksum", base.HEX),
    checksum_status = ProtoField.uint8("ectp.checksum.status", "Checksum status", base.DEC,
        vs_checksum_status),
    connid = ProtoField.uint32("ectp.connid", "Connection ID", base.HEX),
    psn = ProtoField.uint32("ectp.psn", "PSN", base.DEC),
    length = ProtoField.uint16("ectp.length", "Payload Length", base.DEC),
    flags = ProtoField.uint8("ectp.flags", "Flags", base.HEX),
    f = ProtoField.bool("ectp.f", "F", 8, { "set (1)", "clear (0)" }, 0x80),
    reserved = ProtoField.uint8("ectp.reserved", "Reserved", base.HEX, nil, 0x7F),
    token = ProtoField.uint8("ectp.token", "Token ID", base.DEC),
    -- any element
    element = ProtoField.uint8("ectp.element", "Element", base.DEC, vs_element),
    element_next = ProtoField.uint8("ectp.element.next", "Next Element", base.DEC, vs_element,
        0xF0),
    element_len = ProtoField.uint16("ectp.element.length", "Element length", base.DEC),
    -- Connection (1)
    conn_tco = ProtoField.uint8("ectp.conn.tco", "TCO (tree configuration)", base.DEC, vs_tco,
        0x0C),
    conn_ro = ProtoField.uint8("ectp.conn.ro", "RO (reliability)", base.DEC, vs_ro, 0x03),
    conn_agn = ProtoField.uint8("ectp.conn.agn", "AGN (ACK generation number)", base.DEC),
    conn_fdn = ProtoField.uint8("ectp.conn.fdn", "FDN (failure detection number)", base.DEC),
    conn_flags = ProtoField.uint8("ectp.conn.flags", "Flags", base.HEX),
    conn_cc = ProtoField.bool("ectp.conn.cc", "C (congestion controlled, TFMCC)", 8, nil, 0x01),
    conn_mss = ProtoField.uint16("ectp.conn.mss", "MSS (bytes)", base.DEC),
    conn_window = ProtoField.uint32("ectp.conn.window", "Window (DATA packets)", base.DEC),
    conn_hgt = ProtoField.uint32("ectp.conn.hgt", "HGT (heartbeat period, ms)", base.DEC),
    -- Acknowledgement (2)
    ack_n = ProtoField.uint8("ectp.ack.n", "Bitmap bits (n)", base.DEC),
    ack_flags = ProtoField.uint8("ectp.ack.flags", "Flags", base.HEX),
    ack_lsn_lost = ProtoField.bool("ectp.ack.lsn_lost", "L (the LSN is lost)", 8, nil, 0x80),
    ack_block = ProtoField.uint8("ectp.ack.block", "Block", base.DEC),
    ack_lsn = ProtoField.uint32("ectp.ack.lsn", "LSN (lowest PSN not received)", base.DEC),
    ack_adn = ProtoField.uint32("ectp.ack.adn", "ADN (active descendants)", base.DEC),
    ack_stable = ProtoField.uint32("ectp.ack.stable", "Stable (lowest PSN the subtree lacks)",
        base.DEC),
    ack_bitmap = ProtoField.bytes("ectp.ack.bitmap", "Bitmap"),
    ack_missing = ProtoField.uint32("ectp.ack.missing", "Missing PSN", base.DEC),
    ack_missing_count = ProtoField.uint16("ectp.ack.missing_count", "PSNs reported missing",
        base.DEC),
    -- Membership (3)
    member_level = ProtoField.uint8("ectp.member.level", "Tree Level", base.DEC),
    member_child = ProtoField.uint16("ectp.member.child", "Child ID", base.DEC),
    member_id = ProtoField.uint32("ectp.member.id", "Member ID", base.DEC),
    member_parent = ProtoField.uint32("ectp.member.parent", "Parent ID (0 = the TO)", base.DEC),
    -- Timestamp (4)
    timestamp = ProtoField.uint64("ectp.timestamp", "Timestamp (us)", base.DEC),
    -- Address (6)
    addr_family = ProtoField.uint8("ectp.addr.family", "Family", base.DEC, vs_family),
    addr_port = ProtoField.uint16("ectp.addr.port", "Port", base.DEC),
    addr_ipv4 = ProtoField.ipv4("ectp.addr.ipv4", "IPv4 address"),
    addr_ipv6 = ProtoField.ipv6("ectp.addr.ipv6", "IPv6 address"),
    -- Key (7)
    key_salt = ProtoField.bytes("ectp.key.salt", "Salt"),
    key_public = ProtoField.bytes("ectp.key.public", "X25519 public key"),
    -- Authentication (8)
    auth_kind = ProtoField.uint8("ectp.auth.kind", "Kind", base.DEC, vs_kind),
    auth_sender = ProtoField.uint32("ectp.auth.sender", "Sender", base.DEC),
    auth_counter = ProtoField.uint64("ectp.auth.counter", "Counter", base.DEC),
    auth_tag = ProtoField.bytes("ectp.auth.tag", "AES-256-GCM tag"),
    -- Rate (9)
    rate_echo_valid = ProtoField.bool("ectp.rate.echo_valid", "E (echo valid)", 8, nil, 0x02),
    rate_slow_start = ProtoField.bool("ectp.rate.slow_start", "S (slow start)", 8, nil, 0x01),
    rate_round = ProtoField.uint8("ectp.rate.round", "Feedback round", base.DEC),
    rate_max_rtt = ProtoField.uint32("ectp.rate.max_rtt", "Max RTT (us)", base.DEC),
    rate_rate = ProtoField.uint64("ectp.rate.rate", "Sending rate (bytes/s)", base.DEC),
    rate_suppress = ProtoField.uint64("ectp.rate.suppress", "Suppression rate (bytes/s)",
        base.DEC),
    rate_clr = ProtoField.uint32("ectp.rate.clr", "CLR member id", base.DEC),
    rate_echo_member = ProtoField.uint32("ectp.rate.echo.member", "Echo: member id", base.DEC),
    rate_echo_ts = ProtoField.uint32("ectp.rate.echo.timestamp", "Echo: report timestamp (us)",
        base.DEC),
    rate_echo_delay = ProtoField.uint32("ectp.rate.echo.delay", "Echo: delay (us)", base.DEC),
    -- Rate Report (10)
    report_measured = ProtoField.bool("ectp.report.measured", "M (RTT measured)", 8, nil, 0x02),
    report_loss = ProtoField.bool("ectp.report.loss", "L (loss event seen)", 8, nil, 0x01),
    report_round = ProtoField.uint8("ectp.report.round", "Feedback round", base.DEC),
    report_member = ProtoField.uint32("ectp.report.member", "Member id", base.DEC),
    report_calc = ProtoField.uint64("ectp.report.calc", "Calculated rate (bytes/s)", base.DEC),
    report_recv = ProtoField.uint64("ectp.report.recv", "Receive rate (bytes/s)", base.DEC),
    report_p = ProtoField.uint32("ectp.report.p", "Loss event rate x 2^32", base.DEC),
    report_loss_rate = ProtoField.double("ectp.report.loss_rate", "Loss event rate"),
    report_rtt = ProtoField.uint32("ectp.report.rtt", "RTT used (us)", base.DEC),
    report_ts = ProtoField.uint32("ectp.report.timestamp", "Timestamp (us)", base.DEC),
    report_delay = ProtoField.uint32("ectp.report.delay", "Delay so far (us)", base.DEC),
    -- element bytes not decoded (after an unknown element, or a cut one)
    undecoded = ProtoField.bytes("ectp.undecoded", "Undecoded bytes"),
    -- user data
    data_len = ProtoField.uint16("ectp.data.len", "User data length", base.DEC),
    data = ProtoField.bytes("ectp.data", "User data"),
    ciphertext = ProtoField.bytes("ectp.ciphertext", "Encrypted user data (AES-256-GCM)"),
    padding = ProtoField.bytes("ectp.padding", "Join request padding"),
}
local field_list = {}
for _, field in pairs(pf) do
    field_list[#field_list + 1] = field
end
ectp.fields = field_list

local ex_malformed = ProtoExpert.new("ectp.malformed", "Malformed ECTP packet",
    expert.group.MALFORMED, expert.severity.ERROR)
local ex_checksum = ProtoExpert.new("ectp.checksum.bad", "Bad ECTP checksum",
    expert.group.CHECKSUM, expert.severity.ERROR)
local ex_internal = ProtoExpert.new("ectp.dissector_bug", "ECTP dissector internal error",
    expert.group.PROTOCOL, expert.severity.ERROR)
ectp.experts = { ex_malformed, ex_checksum, ex_internal }

-- ---- preferences

ectp.prefs.udp_port = Pref.uint("UDP port", 5000,
    "The group port: every packet of a connection is sent from or to it (gserv -p, default "
    .. "5000); 0: none, the heuristic dissector alone finds ECTP on any port")

local udp_table = DissectorTable.get("udp.port")
local registered_port = 0

local function register_port()
    if registered_port ~= 0 then
        udp_table:remove(registered_port, ectp)
        registered_port = 0
    end
    local p = ectp.prefs.udp_port
    if p ~= nil and p > 0 and p < 65536 then
        udp_table:add(p, ectp)
        registered_port = p
    end
end

function ectp.prefs_changed()
    register_port()
end

-- ---- helpers

local function nibble_hi(b) return math.floor(b / 16) end
local function nibble_lo(b) return b % 16 end
local function has_bit(b, mask) return math.floor(b / mask) % 2 == 1 end

-- The PSN n steps after psn, skipping 0 (src/wire/seq.rs).
local function psn_add(psn, n)
    local index = (psn + PSN_SPACE - 1) % PSN_SPACE
    return (index + n) % PSN_SPACE + 1
end

-- RFC 1071 over the captured datagram, Checksum field included: 0xFFFF when it verifies.
local function ones_complement_sum(tvb, len)
    local raw = tvb:raw(0, len)
    local sum = 0
    local i = 1
    while i + 1 <= len do
        local hi, lo = string.byte(raw, i, i + 1)
        sum = sum + hi * 256 + lo
        i = i + 2
        if sum >= 4294967296 then -- fold now and then; exact in a double either way
            sum = sum % 65536 + math.floor(sum / 65536)
        end
    end
    if i == len then
        sum = sum + string.byte(raw, i) * 256
    end
    while sum > 0xFFFF do
        sum = sum % 65536 + math.floor(sum / 65536)
    end
    return sum
end

-- The meaning of PSN, F and Token ID per packet type (docs/wire-format.md, "What each packet
-- carries"); f is 0 or 1.
local function psn_meaning(ptype, f)
    if ptype == 1 then return "the TO's initial PSN"
    elseif ptype == 3 then
        return f == 1 and "first PSN the joiner delivers"
            or "most children it takes as a repair agent (0: a leaf)"
    elseif ptype == 4 then return "first PSN the child delivers"
    elseif ptype == 5 then return "sequence number"
    elseif ptype == 6 then return "the next PSN the TO will send"
    elseif ptype == 7 then return "PSN of the repaired packet"
    elseif ptype == 9 then return "lowest PSN still repairable"
    elseif ptype == 11 then return "most children it takes as a repair agent (0: a leaf)"
    elseif ptype == 12 then return "first PSN the joiner delivers"
    elseif ptype == 13 then return "departure report: 1 left, 2 ejected, 3 failed"
    elseif ptype == 14 then return "last PSN sent"
    elseif ptype == 15 then return "the SU's initial PSN"
    end
    return nil
end

local function f_meaning(ptype, f)
    local t = {
        [3] = { [0] = "join request", [1] = "admission notice from the TO" },
        [4] = { [0] = "refused / cannot take it", [1] = "accepted / attached" },
        [5] = { [0] = "more segments follow", [1] = "last segment of a message" },
        [7] = { [0] = "more segments follow", [1] = "last segment of a message" },
        [11] = { [0] = "join", [1] = "rebind: its parent fell silent" },
        [12] = { [0] = "refused", [1] = "accepted" },
        [13] = { [0] = "ejection / drop this child", [1] = "leaving / departure report" },
        [14] = { [0] = "normal termination", [1] = "abnormal termination" },
        [15] = { [0] = "started by the TU", [1] = "started by the TO (token given)" },
        [16] = { [0] = "refused", [1] = "granted" },
        [17] = { [0] = "started by the TU", [1] = "started by the TO (token withdrawn)" },
        [18] = { [0] = "", [1] = "accepted" },
    }
    return t[ptype] and t[ptype][f] or nil
end

local function token_meaning(ptype, token)
    if ptype == 5 or ptype == 7 then
        return token == 0 and "from the TO" or "from the SU holding this token"
    end
    if token == 0 then return nil end
    if ptype == 9 then return "from the SU holding this token"
    elseif ptype == 10 then return "to the SU holding this token"
    elseif ptype == 16 then return "the token granted"
    elseif ptype == 17 or ptype == 18 then return "the token returned or withdrawn"
    end
    return nil
end

-- A one-byte range at off, or the last byte before limit when off is at or past it (to hang an
-- item on).
local function byte_at(tvb, off, limit)
    if off < limit then return tvb(off, 1) end
    return tvb(limit - 1, 1)
end

-- A rate field: 32 bits in units of 16 bytes/s, shown in bytes/s.
local function add_rate(et, field, r)
    local raw = r:uint()
    local item = et:add(field, r, UInt64.new(raw * 16))
    if raw == 0xFFFFFFFF then item:append_text(" (saturated: at least this)") end
    return item
end

-- ---- the elements

-- State of one dissection: the tree to add to and whether (and why) it is malformed.
local function new_state(tvb, pinfo, tree)
    return { tvb = tvb, pinfo = pinfo, tree = tree, reasons = {} }
end

local function malformed(st, item, reason)
    st.reasons[#st.reasons + 1] = reason
    local where = item or st.tree
    where:add_proto_expert_info(ex_malformed, "Malformed ECTP packet: " .. reason)
end

-- Adds an element's fields; off is where it starts, avail the bytes it may use (up to the
-- end of the captured datagram). Returns its length, or nil if it is cut short or invalid
-- (then the chain ends here).
local function dissect_element(st, code, off, avail, et)
    local tvb = st.tvb
    if code == E_CONNECTION then
        local r = tvb(off, 12)
        local b0 = r(0, 1):uint()
        local tco, ro = math.floor(b0 / 4) % 4, b0 % 4
        local ti = et:add(pf.conn_tco, r(0, 1))
        if tco > 1 then malformed(st, ti, "Connection element: TCO " .. tco .. " is invalid") end
        ti = et:add(pf.conn_ro, r(0, 1))
        if ro > 2 then malformed(st, ti, "Connection element: RO 3 is invalid") end
        et:add(pf.conn_agn, r(1, 1))
        et:add(pf.conn_fdn, r(2, 1))
        local ft = et:add(pf.conn_flags, r(3, 1))
        ft:add(pf.conn_cc, r(3, 1))
        et:add(pf.conn_mss, r(4, 2))
        et:add(pf.conn_window, r(6, 2), r(6, 2):uint() + 1)
        et:add(pf.conn_hgt, r(8, 4))
        et:append_text(string.format(": %s, %s, MSS %d, HGT %d ms", vs_tco[tco], vs_ro[ro],
            r(4, 2):uint(), r(8, 4):uint()))
        if tco > 1 or ro > 2 then return nil end
        return 12
    elseif code == E_ACK then
        if avail < 16 then return nil, "truncated" end
        local n = tvb(off + 1, 1):uint()
        local words = math.ceil(n / 32)
        local elen = 16 + 4 * words
        if avail < elen then return nil, "truncated" end
        local r = tvb(off, elen)
        et:add(pf.ack_n, r(1, 1))
        local ft = et:add(pf.ack_flags, r(2, 1))
        ft:add(pf.ack_lsn_lost, r(2, 1))
        et:add(pf.ack_block, r(3, 1))
        local lsn = r(4, 4):uint()
        local block = r(3, 1):uint()
        local lsn_item = et:add(pf.ack_lsn, r(4, 4))
        et:add(pf.ack_adn, r(8, 4))
        et:add(pf.ack_stable, r(12, 4))
        local ok = true
        local missing = 0
        local lost_lsn = has_bit(r(2, 1):uint(), 0x80)
        if lost_lsn then
            missing = 1
            lsn_item:add(pf.ack_missing, r(4, 4), lsn):set_generated()
        end
        if words > 0 then
            local bt = et:add(pf.ack_bitmap, r(16, 4 * words))
            for j = 0, 4 * words - 1 do
                local byte = r(16 + j, 1):uint()
                for k = 0, 7 do
                    local i = 8 * j + k
                    local bit = has_bit(byte, 2 ^ (7 - k))
                    if i < n then
                        if not bit then
                            missing = missing + 1
                            bt:add(pf.ack_missing, r(16 + j, 1),
                                psn_add(lsn, 1 + 255 * block + i)):set_generated()
                        end
                    elseif bit and ok then
                        ok = false
                        malformed(st, bt, "Acknowledgement element: padding bits are not zero")
                    end
                end
            end
        end
        et:add(pf.ack_missing_count, r(0, elen), missing):set_generated()
        et:append_text(string.format(": LSN %d%s, %d bitmap bits, %d missing", lsn,
            lost_lsn and " (lost)" or "", n, missing))
        if not ok then return nil end
        return elen
    elseif code == E_MEMBERSHIP then
        local r = tvb(off, 12)
        et:add(pf.member_level, r(1, 1))
        et:add(pf.member_child, r(2, 2))
        et:add(pf.member_id, r(4, 4))
        et:add(pf.member_parent, r(8, 4))
        et:append_text(string.format(": member %d, child id %d, level %d, parent %d",
            r(4, 4):uint(), r(2, 2):uint(), r(1, 1):uint(), r(8, 4):uint()))
        return 12
    elseif code == E_TIMESTAMP then
        local r = tvb(off, 12)
        et:add(pf.timestamp, r(4, 8))
        et:append_text(": " .. tostring(r(4, 8):uint64()) .. " us")
        return 12
    elseif code == E_ADDRESS then
        if avail < 4 then return nil, "truncated" end
        local family = tvb(off + 1, 1):uint()
        local ti = et:add(pf.addr_family, tvb(off + 1, 1))
        if family ~= 4 and family ~= 6 then
            malformed(st, ti, "Address element: family " .. family .. " is neither 4 nor 6")
            return nil
        end
        local elen = family == 4 and 8 or 20
        if avail < elen then return nil, "truncated" end
        et:add(pf.addr_port, tvb(off + 2, 2))
        local port = tvb(off + 2, 2):uint()
        if family == 4 then
            et:add(pf.addr_ipv4, tvb(off + 4, 4))
            et:append_text(string.format(": %s:%d", tostring(tvb(off + 4, 4):ipv4()), port))
        else
            et:add(pf.addr_ipv6, tvb(off + 4, 16))
            et:append_text(string.format(": [%s]:%d", tostring(tvb(off + 4, 16):ipv6()), port))
        end
        return elen
    elseif code == E_KEY then
        local r = tvb(off, 52)
        et:add(pf.key_salt, r(4, 16))
        et:add(pf.key_public, r(20, 32))
        return 52
    elseif code == E_AUTH then
        local r = tvb(off, 32)
        local kind = r(1, 1):uint()
        local ti = et:add(pf.auth_kind, r(1, 1))
        local ok = true
        if kind < 1 or kind > 4 then
            malformed(st, ti, "Authentication element: kind " .. kind .. " is invalid")
            ok = false
        end
        local sender = r(4, 4):uint()
        local si = et:add(pf.auth_sender, r(4, 4))
        if sender == 0 then si:append_text(" (the TO)")
        elseif sender == 0xFFFFFFFF then si:append_text(" (a TU that has no member id yet)") end
        et:add(pf.auth_counter, r(8, 8))
        et:add(pf.auth_tag, r(16, 16))
        et:append_text(string.format(": %s, sender %d, counter %s",
            vs_kind[kind] or "invalid kind", sender, tostring(r(8, 8):uint64())))
        if nibble_hi(r(0, 1):uint()) ~= 0 then
            malformed(st, et, "Authentication element is not the last (Next Element not 0)")
            ok = false
        end
        if not ok then return nil end
        return 32
    elseif code == E_RATE then
        local r = tvb(off, 28)
        et:add(pf.rate_echo_valid, r(0, 1))
        et:add(pf.rate_slow_start, r(0, 1))
        et:add(pf.rate_round, r(1, 1))
        et:add(pf.rate_max_rtt, r(2, 2), r(2, 2):uint() * 100)
        add_rate(et, pf.rate_rate, r(4, 4))
        add_rate(et, pf.rate_suppress, r(8, 4))
        local clr = et:add(pf.rate_clr, r(12, 4))
        if r(12, 4):uint() == 0xFFFFFFFF then clr:append_text(" (none)") end
        et:add(pf.rate_echo_member, r(16, 4))
        et:add(pf.rate_echo_ts, r(20, 4))
        et:add(pf.rate_echo_delay, r(24, 4))
        et:append_text(string.format(": %.0f bytes/s, round %d%s", r(4, 4):uint() * 16,
            r(1, 1):uint(), has_bit(r(0, 1):uint(), 1) and ", slow start" or ""))
        return 28
    elseif code == E_REPORT then
        local r = tvb(off, 32)
        et:add(pf.report_measured, r(0, 1))
        et:add(pf.report_loss, r(0, 1))
        et:add(pf.report_round, r(1, 1))
        et:add(pf.report_member, r(4, 4))
        add_rate(et, pf.report_calc, r(8, 4))
        add_rate(et, pf.report_recv, r(12, 4))
        et:add(pf.report_p, r(16, 4))
        et:add(pf.report_loss_rate, r(16, 4), r(16, 4):uint() / 4294967296):set_generated()
        et:add(pf.report_rtt, r(20, 4))
        et:add(pf.report_ts, r(24, 4))
        et:add(pf.report_delay, r(28, 4))
        et:append_text(string.format(": member %d, receive rate %.0f bytes/s, round %d",
            r(4, 4):uint(), r(12, 4):uint() * 16, r(1, 1):uint()))
        return 32
    end
    return nil, "unknown"
end

-- Walks the element chain from off; returns where the user data starts (nil after an error),
-- where the element that failed starts (nil without an error), the names of the elements
-- decoded, and whether an Authentication element was among them. Stops at the first error, as
-- the library's parser does.
local function dissect_elements(st, first, off, limit)
    local tvb, tree = st.tvb, st.tree
    local code = first
    local seen = {}
    local names = {}
    local keyed = false
    while code ~= 0 do
        if code == E_QOS or code > E_REPORT then
            local ti = tree:add(pf.element, byte_at(tvb, off, limit), code)
            malformed(st, ti, string.format("unknown element code %d", code))
            return nil, off, names, keyed
        end
        if seen[code] then
            local ti = tree:add(pf.element, byte_at(tvb, off, limit), code)
            malformed(st, ti, "duplicate " .. vs_element[code] .. " element")
            return nil, off, names, keyed
        end
        seen[code] = true
        local avail = limit - off
        local need = element_len[code] or (code == E_ACK and 16 or 4)
        if avail < need then
            local ti = tree:add(pf.element, avail > 0 and tvb(off, avail) or byte_at(tvb, off, limit),
                code)
            ti:append_text(string.format(" (%d of at least %d bytes)", math.max(avail, 0), need))
            malformed(st, ti, vs_element[code] .. " element truncated")
            return nil, off, names, keyed
        end
        local et = tree:add(pf.element, tvb(off, math.min(need, avail)), code)
        et:add(pf.element_next, tvb(off, 1))
        local next_code = nibble_hi(tvb(off, 1):uint())
        local elen, why = dissect_element(st, code, off, avail, et)
        if elen == nil then
            if why == "truncated" then
                et:set_len(avail)
                malformed(st, et, vs_element[code] .. " element truncated")
            end
            return nil, off, names, keyed
        end
        et:set_len(elen)
        et:add(pf.element_len, tvb(off, elen), elen):set_generated()
        names[#names + 1] = vs_element[code]
        if code == E_AUTH then keyed = true end
        off = off + elen
        code = next_code
    end
    return off, nil, names, keyed
end

-- ---- the packet

-- Dissects one ECTP packet, all of tvb; returns the text for the Info column. segment is nil,
-- or "i/n" for one segment of a UDP GSO message.
local function dissect(tvb, pinfo, tree, segment)
    local caplen = tvb:len()
    local len = tvb:reported_len()
    local root = caplen > 0 and tree:add(ectp, tvb(0, caplen)) or tree:add(ectp)
    local st = new_state(tvb, pinfo, root)
    if segment then
        root:append_text(", UDP GSO segment " .. segment)
    end

    if caplen < HEADER_LEN then
        if caplen > 0 then root:add(pf.undecoded, tvb(0, caplen)) end
        malformed(st, root, string.format("%d bytes, shorter than the 16-byte header", len))
        return "malformed: " .. st.reasons[1]
    end

    local b0 = tvb(0, 1):uint()
    local ne, version, ct = nibble_hi(b0), math.floor(b0 / 4) % 4, b0 % 4
    local ptype = tvb(1, 1):uint()
    local psn = tvb(8, 4):uint()
    local paylen = tvb(12, 2):uint()
    local fbyte = tvb(14, 1):uint()
    local f = has_bit(fbyte, 0x80) and 1 or 0
    local token = tvb(15, 1):uint()

    local ht = root:add(tvb(0, HEADER_LEN), "Base header")
    ht:add(pf.ne, tvb(0, 1))
    local vi = ht:add(pf.version, tvb(0, 1))
    if version ~= 0 then malformed(st, vi, "Version " .. version .. ", not 0") end
    local ci = ht:add(pf.ct, tvb(0, 1))
    if ct ~= 2 then malformed(st, ci, "connection type is not duplex (binary 10)") end
    local ti = ht:add(pf.type, tvb(1, 1))
    local acronym = type_acronyms[ptype]
    if acronym then
        ht:add(pf.type_name, tvb(1, 1), acronym):set_generated()
    end

    -- Checksum: over the whole datagram, when all of it was captured.
    local cki = ht:add(pf.checksum, tvb(2, 2))
    local checksum_ok = nil
    if caplen == len then
        checksum_ok = ones_complement_sum(tvb, caplen) == 0xFFFF
        ht:add(pf.checksum_status, tvb(2, 2), checksum_ok and 1 or 0):set_generated()
    else
        ht:add(pf.checksum_status, tvb(2, 2), 2):set_generated()
    end

    ht:add(pf.connid, tvb(4, 4))
    local pi = ht:add(pf.psn, tvb(8, 4))
    local pm = psn_meaning(ptype, f)
    if pm then pi:append_text(" (" .. pm .. ")") end
    local li = ht:add(pf.length, tvb(12, 2))
    local fi = ht:add(pf.flags, tvb(14, 1))
    local fti = fi:add(pf.f, tvb(14, 1))
    local fm = f_meaning(ptype, f)
    if fm and fm ~= "" then fti:append_text(" (" .. fm .. ")") end
    fi:add(pf.reserved, tvb(14, 1))
    local tki = ht:add(pf.token, tvb(15, 1))
    local tm = token_meaning(ptype, token)
    if tm then tki:append_text(" (" .. tm .. ")") end

    -- The library's checks, in its order (docs/wire-format.md); all are shown, not just the
    -- first.
    if paylen ~= len - HEADER_LEN then
        malformed(st, li, string.format("Payload Length %d, but %d bytes follow the header",
            paylen, len - HEADER_LEN))
    end
    if checksum_ok == false then
        cki:add_proto_expert_info(ex_checksum)
        malformed(st, cki, "bad checksum")
    end
    if not acronym then
        malformed(st, ti, string.format("unknown packet type %d", ptype))
    end

    -- Elements, then the user data.
    local data_at, fail_at, names, keyed = dissect_elements(st, ne, HEADER_LEN, caplen)
    local info = string.format("%s PSN=%d", acronym or ("type " .. ptype), psn)
    if f == 1 then info = info .. " F" end
    if token ~= 0 then info = info .. " Token=" .. token end
    if #names > 0 then info = info .. " [" .. table.concat(names, ", ") .. "]" end
    if data_at == nil then
        -- The rest of the datagram, from the element that failed.
        if fail_at < caplen then root:add(pf.undecoded, tvb(fail_at, caplen - fail_at)) end
    else
        local dlen = len - data_at
        if dlen > 0 then
            root:add(pf.data_len, tvb(data_at, caplen - data_at), dlen):set_generated()
            local r = tvb(data_at, caplen - data_at)
            if keyed then
                root:add(pf.ciphertext, r)
            elseif (ptype == 11 or (ptype == 3 and f == 0)) then
                root:add(pf.padding, r)
            else
                root:add(pf.data, r)
            end
            info = info .. " Len=" .. dlen .. (keyed and " (encrypted)" or "")
        else
            root:add(pf.data_len, 0):set_generated()
        end
    end

    root:append_text(", " .. info)
    if #st.reasons > 0 then
        info = info .. " [malformed: " .. table.concat(st.reasons, "; ") .. "]"
    end
    return info
end

-- Whether the 16 bytes at off look like a base header: Version 0, CT duplex, a known packet
-- type. Returns the packet's length (header + Payload Length), or nil.
local function plausible_header(tvb, off)
    if tvb:len() - off < HEADER_LEN then return nil end
    local b0 = tvb(off, 1):uint()
    if b0 % 4 ~= 2 or math.floor(b0 / 4) % 4 ~= 0 then return nil end
    local ptype = tvb(off + 1, 1):uint()
    if ptype < 1 or ptype > 18 then return nil end
    return HEADER_LEN + tvb(off + 12, 2):uint()
end

-- A capture taken on the sending host (loopback above all) sees a UDP GSO message
-- (UDP_SEGMENT, which libectp uses for runs of DATA) before the kernel cuts it into datagrams:
-- one "datagram" holding several packets, all of the first one's length but the last, which may
-- be shorter. Returns the {offset, length} of each when tvb is such a run of two or more
-- consistent headers, else nil (then it is one packet, perhaps malformed).
local function gso_segments(tvb)
    local len = tvb:reported_len()
    if tvb:len() ~= len then return nil end
    local size = plausible_header(tvb, 0)
    if size == nil or size >= len then return nil end
    local segments = {}
    local off = 0
    while off < len do
        local plen = plausible_header(tvb, off)
        if plen == nil then return nil end
        local rest = len - off
        if rest > size then
            if plen ~= size then return nil end
        elseif plen ~= rest then
            return nil
        end
        segments[#segments + 1] = { off, plen }
        off = off + plen
    end
    return segments
end

local function dissect_datagram(tvb, pinfo, tree)
    pinfo.cols.protocol = "ECTP"
    local segments = gso_segments(tvb)
    if segments == nil then
        pinfo.cols.info = dissect(tvb, pinfo, tree, nil)
        return
    end
    local infos = {}
    for i, seg in ipairs(segments) do
        local sub = tvb(seg[1], seg[2]):tvb()
        infos[#infos + 1] = dissect(sub, pinfo, tree, i .. "/" .. #segments)
    end
    pinfo.cols.info = string.format("[UDP GSO, %d packets] %s", #segments,
        table.concat(infos, " | "))
end

-- Never let a bug of this file show as a Lua error: report it as such and carry on.
local function dissect_safely(tvb, pinfo, tree)
    local ok, err = pcall(dissect_datagram, tvb, pinfo, tree)
    if not ok then
        local item = tvb:len() > 0 and tree:add(ectp, tvb(0, tvb:len())) or tree:add(ectp)
        item:add_proto_expert_info(ex_internal, "ECTP dissector internal error: " .. tostring(err))
    end
    return tvb:len()
end

function ectp.dissector(tvb, pinfo, tree)
    return dissect_safely(tvb, pinfo, tree)
end

-- The heuristic: a consistent base header (or a UDP GSO run of them), nothing more; the
-- checksum is shown, not required.
local function heuristic(tvb, pinfo, tree)
    local plen = plausible_header(tvb, 0)
    if plen == nil then return false end
    if plen ~= tvb:reported_len() and gso_segments(tvb) == nil then return false end
    dissect_safely(tvb, pinfo, tree)
    return true
end

ectp:register_heuristic("udp", heuristic)
register_port()

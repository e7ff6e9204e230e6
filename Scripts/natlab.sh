#!/usr/bin/env bash
#: natlab.sh — real kernel NAT in Linux network namespaces, for trav's tests and for people.
#:
#: The single source of truth for lab topologies: Sources/NATLab calls this script and never
#: builds namespaces itself. Needs root, iproute2 (`ip`), nftables (`nft`); `conntrack` is handy.
#:
#: USAGE
#:   natlab.sh up PREFIX SITE_SPEC...   build a topology; prints its host table (see `hosts`)
#:   natlab.sh down PREFIX              remove everything with that prefix (idempotent)
#:   natlab.sh exec PREFIX HOST CMD...  run CMD inside HOST's namespace (exec's: keeps the pid)
#:   natlab.sh shell PREFIX HOST        interactive shell inside HOST's namespace
#:   natlab.sh hosts PREFIX             host table: HOST SITE KIND ROLE ADDRESS[,ADDRESS...]
#:   natlab.sh addr PREFIX HOST         HOST's first address
#:   natlab.sh rules PREFIX HOST        `nft list ruleset` inside HOST (a router)
#:   natlab.sh conntrack PREFIX HOST    `conntrack -L` inside HOST (a router)
#:   natlab.sh upnpd PREFIX SITE STUN_IP...  miniupnpd (NAT-PMP, PCP, UPnP IGD) in SITE's router, in the
#:                                      foreground (exec's: keeps the pid); see "Port mapping" below
#:   natlab.sh list                     labs on this machine: prefix, owner pid, alive/stale, sites
#:   natlab.sh cleanup-stale            `down` every lab whose owner process is gone
#:   natlab.sh kinds                    the NAT kinds a SITE_SPEC may name
#:   natlab.sh link PREFIX SITE LINK    change a live site's link conditions (built with @LINK)
#:   natlab.sh roam PREFIX HOST SITE    move HOST to SITE's LAN (a phone leaving one network for another):
#:                                      a new interface roam0 at .200 there becomes its default route and
#:                                      eth0 goes down; sockets bound to any address stay open. Once per host.
#:   natlab.sh links PREFIX             each lined site's conditions now: SITE LINK (canonical form)
#:   natlab.sh profiles                 the named link profiles: NAME and what they stand for
#:   natlab.sh resolve LINK             LINK as the canonical key=value list (checks it)
#:   natlab.sh help                     this text
#:
#: PREFIX   [a-z][a-z0-9]{1,11}, unique per run (e.g. nl + random). Namespaces are PREFIX-HOST.
#: OWNER    the pid that owns the lab: $NATLAB_OWNER_PID, else the caller ($PPID). `cleanup-stale`
#:          removes a lab once that pid is gone (pid + start time, so a reused pid is not "alive").
#: STATE    $NATLAB_STATE_DIR (default /run/natlab): PREFIX.owner, PREFIX.ns, PREFIX.hosts,
#:          PREFIX.links (SITE CONDITIONS), PREFIX.SITE.link.log (the forwarder's output).
#:
#: SITE_SPEC  [NAME:]KIND[:HOSTS][@LINK]   NAME [a-z][a-z0-9]{0,7} (default sN), HOSTS 1..4 (default 1)
#:   e.g.  natlab.sh up demo cam:full-cone@mobile viewer:symmetric lan:port-restricted-cone:2
#:
#: LINK  what the site's access line does to packets: comma-separated PROFILE names and KEY=VALUEs,
#:       applied left to right (later ones override), e.g.  mobile  mobile,loss=100  delay=100ms
#:   delay=MS[ms]     one-way delay, each direction (RTT grows by twice this)
#:   jitter=MS[ms]    ± uniform per packet, each direction; packets keep their order
#:   reorder=PCT[%]   that share of packets (0..100, 0.1 steps) is held back 5 ms more, so the ones
#:                    behind it overtake: real reordering, each direction (needs the forwarder)
#:   loss=PCT[%]      random loss 0..100 (0.1 steps), each direction (nft `numgen random`)
#:   down=RATE        towards the site; RATE = N[kbit|mbit] (N alone: kbit/s) or `unlimited`
#:   up=RATE          from the site
#: PROFILES (the one place they are defined; `natlab.sh profiles`)
#:   ideal     no conditions (a line that later `link` commands can change)
#:   fibre     delay=10ms down=100mbit up=100mbit
#:   dsl       delay=30ms down=10mbit up=1mbit
#:   mobile    delay=60ms down=4mbit up=4mbit loss=1
#:   bad-wifi  delay=20ms jitter=15ms down=10mbit up=10mbit loss=5
#: A site with @LINK gets a namespace PREFIX-NAME-link between its router (the carrier for double-nat)
#: and the internet bridge: interface "site" faces the router's wan, "inet" the internet. Without
#: delay or jitter a kernel bridge joins the two; with them `trav lab-link` (a userspace forwarder over
#: AF_PACKET sockets; $NATLAB_TRAV, else .build/debug/trav next to Scripts/, else trav on the PATH)
#: does. Loss: nft netdev egress hooks on both interfaces; rate: tbf on their egress (down = "site",
#: up = "inet"). Many kernels lack netem (sch_netem), so it is not the default; NATLAB_NETEM=1 uses
#: it for delay, jitter and rate instead, where the kernel has it. `link` changes live: loss and
#: rate at once; the forwarder is restarted only when delay or jitter change (frames it held are
#: lost then).
#:
#: KINDS (RFC 4787 terms; EIM = endpoint-independent mapping, EIF/ADF/APDF = filtering)
#:   open                  no NAT: hosts have public 198.51.100.x addresses routed by the ISP
#:   full-cone             EIM + EIF         (UDP: any remote may send to a live mapping)
#:   restricted-cone       EIM + ADF         (UDP: remotes whose address the host contacted)
#:   port-restricted-cone  EIM + APDF        (plain Linux masquerade)
#:   symmetric             APDM + APDF       (masquerade fully-random: new port per destination)
#:   udp-blocked           NAT (as port-restricted) that drops all forwarded UDP
#:   tcp443-only           NAT that lets only TCP to port 443 out
#:   double-nat            home NAT (port-restricted) behind a carrier NAT on 100.64.N.0/24 (EIM)
#: The cone filtering rules are UDP-only; TCP through any NAT kind behaves port-restricted.
#: No NAT hairpinning (a host cannot reach its own site via the router's public address).
#:
#: EXAMPLE (a person's session)
#:   natlab.sh up demo cam:restricted-cone
#:   natlab.sh exec demo cloud turnserver -n -S -z --no-cli --no-tls --no-dtls \
#:       -L 203.0.113.10 -L 203.0.113.11 --db /tmp/demo.db --log-file stdout >/dev/null &
#:   natlab.sh exec demo cam-h1 turnutils_natdiscovery -f 203.0.113.10
#:   natlab.sh conntrack demo cam-router; natlab.sh shell demo cam-h1
#:   natlab.sh down demo          # also kills the turnserver: down kills every process inside
#:
#: TOPOLOGY (N = site index 1..15)
#:
#:   PREFIX-cloud 203.0.113.10 + .11 ─┐
#:                                    ├─ PREFIX-inet: bridge br0 203.0.113.1/24 ("the internet",
#:   PREFIX-NAME-router 203.0.113.(100+N)  routes 198.51.100.16N/28 to open sites)
#:     └─ LAN bridge: 10.N.0.1/24 ─ PREFIX-NAME-h1 10.N.0.10, -h2 10.N.0.11, ...
#:   double-nat: PREFIX-NAME-carrier 203.0.113.(100+N) ─ 100.64.N.0/24 ─ PREFIX-NAME-router
#:     100.64.N.2 ─ 192.168.N.0/24 ─ hosts 192.168.N.10...
#:   open:  PREFIX-NAME-router 203.0.113.(100+N) routes 198.51.100.16N/28, hosts .16N+2...
#:   @LINK: PREFIX-NAME-router (or -carrier) wan ─ site PREFIX-NAME-link inet ─ sN on br0
#:
#: Port mapping (`upnpd`): Debian's miniupnpd (nftables build) on the router's "wan"/"lan", its
#: rules in `table inet miniupnpd` (chains miniupnpd, prerouting_miniupnpd, postrouting_miniupnpd),
#: its files $STATE_DIR/PREFIX.SITE.miniupnpd.*. miniupnpd refuses to map when its WAN address is in
#: a reserved range (the lab's TEST-NET-3 is) unless its STUN check (ext_perform_stun: RFC 5780
#: CHANGE-REQUEST from four ports to STUN_IP:3478) finds neither NAT nor filter in front of it, so
#: the router's own traffic to STUN_IP... is exempt from masquerade and admitted by its input chain.
#: Hosts behind the router see no change from that; only the daemon's mappings open the NAT.
#:   natlab.sh upnpd demo cam 203.0.113.10 203.0.113.11 &   natlab.sh exec demo cam-h1 natpmpc -g 10.1.0.1
#:
#: Every router: ip_forward=1 and conntrack UDP timeouts of $NATLAB_UDP_TIMEOUT s (default 30;
#: per-namespace sysctls) so mappings really expire without keepalives. Nothing is done in the
#: root namespace: veth pairs are created directly inside the namespaces (`ip -n A link add ...
#: peer ... netns B`), so no interface, route or rule ever exists on the host.
set -Eeuo pipefail

STATE_DIR=${NATLAB_STATE_DIR:-/run/natlab}
UDP_TIMEOUT=${NATLAB_UDP_TIMEOUT:-30}
[[ $UDP_TIMEOUT =~ ^[1-9][0-9]{0,3}$ ]] || { echo "natlab: bad NATLAB_UDP_TIMEOUT" >&2; exit 1; }
KINDS="open full-cone restricted-cone port-restricted-cone symmetric udp-blocked tcp443-only double-nat"
# Link profiles, NAME=LINK (the header's PROFILES table says the same for people).
PROFILES=(
    "ideal="
    "fibre=delay=10ms,down=100mbit,up=100mbit"
    "dsl=delay=30ms,down=10mbit,up=1mbit"
    "mobile=delay=60ms,down=4mbit,up=4mbit,loss=1"
    "bad-wifi=delay=20ms,jitter=15ms,down=10mbit,up=10mbit,loss=5"
)
MAX_SITES=15

die() { echo "natlab: $*" >&2; exit 1; }
usage() { sed -n 's/^#: \{0,1\}//p' "$0"; }

check_prefix() {
    [[ ${1:-} =~ ^[a-z][a-z0-9]{1,11}$ ]] || die "bad PREFIX '${1:-}' (want [a-z][a-z0-9]{1,11})"
}
ns_of() { echo "$PREFIX-$1"; }
# Run a command in a lab host's namespace.
in_ns() { local h=$1; shift; ip netns exec "$(ns_of "$h")" "$@"; }

# Process start time (field 22 of /proc/PID/stat), to tell a live owner from a reused pid.
start_time() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }            # drop "pid (comm) " — comm may contain spaces
    set -- $stat
    [[ $1 != Z && $1 != X ]] || return 1   # a crashed owner nobody reaped yet is not alive
    echo "${20}"                 # field 22 overall = 20th after pid and comm
}

owner_alive() { # PREFIX
    local pid st
    read -r pid st _ < "$STATE_DIR/$1.owner" 2>/dev/null || return 1
    [[ -n ${pid:-} ]] || return 1
    [[ $(start_time "$pid" 2>/dev/null || true) == "$st" ]]
}

new_ns() { # HOST
    local ns; ns=$(ns_of "$1")
    # Recorded right after creation, so `down` finds half-built labs, but never a namespace that
    # existed before (`ip netns add` fails on those, and then we never record or delete it).
    ip netns add "$ns"
    echo "$ns" >> "$STATE_DIR/$PREFIX.ns"
    in_ns "$1" ip link set lo up
    in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# veth HOST_A IF_A HOST_B IF_B — a veth pair born inside the two namespaces (never in the root one).
veth() {
    ip -n "$(ns_of "$1")" link add name "$2" type veth peer name "$4" netns "$(ns_of "$3")"
    ip -n "$(ns_of "$1")" link set "$2" up
    ip -n "$(ns_of "$3")" link set "$4" up
}

router_sysctls() { # HOST
    in_ns "$1" sysctl -qw net.ipv4.ip_forward=1
    # Per-namespace conntrack timeouts (kernel >= 4.x keeps nf_conntrack_* sysctls per netns).
    # They exist once nf_conntrack is loaded; loading rules that use ct makes sure of that.
    in_ns "$1" sysctl -qw net.netfilter.nf_conntrack_udp_timeout="$UDP_TIMEOUT" \
        net.netfilter.nf_conntrack_udp_timeout_stream="$UDP_TIMEOUT" \
        || echo "natlab: warning: could not set conntrack UDP timeouts in $1" >&2
}

# nft ruleset for a NAT router of KIND. "wan" faces the internet (or the carrier), "lan" the hosts.
#
# Kernel subtleties, found the hard way:
# * Linux masquerade keeps the source port when the resulting tuple is free, and a second
#   destination never collides, so plain masquerade is endpoint-independent *mapping*; its
#   filtering is address-and-port dependent because only conntrack entries let packets back in.
# * A cone (EIF/ADF) needs inbound packets that match no conntrack entry to be DNATed to the
#   right inside endpoint. We keep a dynamic map filled from the packet path *after* masquerade
#   (postrouting, priority srcnat+10): there `ct reply proto-dst` is the port the NAT really
#   chose, so the map stays right even when masquerade had to change the port.
#   Reply-direction packets of DNATed flows refresh the map too (the tuples are mirrored).
# * Filter order matters for tcp443-only: `established` must be accepted before the outbound
#   drop, else the handshake's final ACK is dropped; the client still believes it connected
#   (a bare connect test passes) but no data flows. Hence the tests exchange STUN over TCP.
# * nat chains only see the first packet of a flow, so DNAT via the map touches only
#   unsolicited packets; established flows never consult it.
# * Map entries time out with the conntrack UDP timeout: no outbound traffic, no mapping.
# * Checked with two hosts binding the same port to the same server: masquerade gives the second
#   a new port (e.g. 40000 -> 5272) and the map follows it (5272 : 10.1.0.11 . 40000).
# * Like a home router's firewall, the router drops new inbound connections to itself on the WAN
#   (chain input). That drop happens before conntrack confirms the entry, so an unsolicited packet
#   leaves nothing behind. Without it the packet reached the router's own stack and left an
#   UNREPLIED entry (router WAN:p <- remote); when the inside host then sent to that very remote
#   endpoint, masquerade had to avoid the taken tuple and picked another port, which made every
#   simultaneous hole punch fail on whichever side sent second.
nft_rules() { # KIND
    local kind=$1 masq="masquerade" outbound="" cone=""
    case $kind in
        symmetric)   masq="masquerade fully-random" ;;   # new random port per flow: APDM
        udp-blocked) outbound='meta l4proto udp drop' ;;
        tcp443-only) outbound='iifname "lan" tcp dport 443 ct state new accept
        iifname "lan" drop' ;;
        full-cone)   cone=port ;;
        restricted-cone) cone=addr ;;
    esac
    echo "table ip natlab {"
    if [[ $cone == port ]]; then
        cat <<'EOF'
    # full cone: external UDP port -> inside endpoint, for inbound from anyone (EIF)
    map cone {
        type inet_service : ipv4_addr . inet_service
        flags dynamic,timeout; timeout TIMEOUTs; size 65536
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" meta l4proto udp dnat ip to udp dport map @cone
    }
    chain mapping {
        type filter hook postrouting priority srcnat + 10; policy accept;
        oifname "wan" meta l4proto udp ct direction original update @cone { ct reply proto-dst : ct original ip saddr . ct original proto-src }
        oifname "wan" meta l4proto udp ct direction reply update @cone { ct original proto-dst : ct reply ip saddr . ct reply proto-src }
    }
EOF
    elif [[ $cone == addr ]]; then
        cat <<'EOF'
    # restricted cone: (remote address, external UDP port) -> inside endpoint: ADF
    map cone {
        type ipv4_addr . inet_service : ipv4_addr . inet_service
        flags dynamic,timeout; timeout TIMEOUTs; size 65536
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" meta l4proto udp dnat ip to ip saddr . udp dport map @cone
    }
    chain mapping {
        type filter hook postrouting priority srcnat + 10; policy accept;
        oifname "wan" meta l4proto udp ct direction original update @cone { ct original ip daddr . ct reply proto-dst : ct original ip saddr . ct original proto-src }
        oifname "wan" meta l4proto udp ct direction reply update @cone { ct original ip saddr . ct original proto-dst : ct reply ip saddr . ct reply proto-src }
    }
EOF
    fi
    cat <<EOF
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" $masq
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new drop
    }
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
        ${outbound:+$outbound
        }iifname "wan" ct status dnat accept
        iifname "wan" drop
    }
}
EOF
}

load_rules() { # HOST KIND
    nft_rules "$2" | sed "s/TIMEOUTs/${UDP_TIMEOUT}s/" | in_ns "$1" nft -f -
}

host_line() { echo "$*" >> "$STATE_DIR/$PREFIX.hosts"; }

# ---- link conditions ----------------------------------------------------------------------------
# Parsed LINK: one-way delay and jitter in ms, reorder and loss in tenths of a percent, rates in
# kbit/s (0 = unlimited). Set by parse_link.
L_DELAY=0 L_JITTER=0 L_REORDER=0 L_LOSS=0 L_DOWN=0 L_UP=0

profile_link() { # NAME -> its LINK on stdout; fails for an unknown name
    local p
    for p in "${PROFILES[@]}"; do
        [[ ${p%%=*} == "$1" ]] && { echo "${p#*=}"; return 0; }
    done
    return 1
}

rate_kbit() { # VALUE -> kbit/s (0 = unlimited)
    local v=$1
    case $v in
        unlimited) echo 0 ;;
        *mbit) v=${v%mbit}; [[ $v =~ ^[0-9]{1,5}$ ]] && (( 10#$v >= 1 )) || return 1; echo $((10#$v * 1000)) ;;
        *) v=${v%kbit}; [[ $v =~ ^[0-9]{1,8}$ ]] && (( 10#$v >= 8 )) || return 1; echo $((10#$v)) ;;
    esac
}

parse_link() { # LINK: fills L_*; dies on anything it does not know
    local link=$1 item sub value
    L_DELAY=0 L_JITTER=0 L_REORDER=0 L_LOSS=0 L_DOWN=0 L_UP=0
    [[ $link =~ ^[a-z0-9=.,%-]*$ ]] || die "bad LINK '$link' (names and KEY=VALUEs joined by commas)"
    local -a items=() more=()
    IFS=, read -r -a items <<< "$link"
    for item in "${items[@]}"; do
        [[ -n $item ]] || continue
        if [[ $item == *=* ]]; then apply_link_item "$item" "$link"; continue; fi
        sub=$(profile_link "$item") || die "unknown link profile '$item' (profiles: $(profile_names))"
        IFS=, read -r -a more <<< "$sub"
        for value in "${more[@]}"; do apply_link_item "$value" "$link"; done   # profiles name no profiles
    done
}

apply_link_item() { # KEY=VALUE LINK (for messages)
    local key=${1%%=*} value=${1#*=}
    case $key in
        delay|jitter)
            value=${value%ms}
            [[ $value =~ ^[0-9]{1,5}$ ]] && (( 10#$value <= 10000 )) || die "bad $key '$1' in '$2' (want 0..10000 ms)"
            if [[ $key == delay ]]; then L_DELAY=$((10#$value)); else L_JITTER=$((10#$value)); fi ;;
        loss|reorder)
            value=${value%\%}
            [[ $value =~ ^([0-9]{1,3})(\.([0-9]))?$ ]] || die "bad $key '$1' in '$2' (want 0..100, one decimal)"
            value=$((10#${BASH_REMATCH[1]} * 10 + 10#${BASH_REMATCH[3]:-0}))
            (( value <= 1000 )) || die "bad $key '$1' in '$2' (want 0..100)"
            if [[ $key == loss ]]; then L_LOSS=$value; else L_REORDER=$value; fi ;;
        down|up)
            value=$(rate_kbit "$value") || die "bad $key '$1' in '$2' (want N[kbit|mbit], 8 kbit/s or more, or unlimited)"
            if [[ $key == down ]]; then L_DOWN=$value; else L_UP=$value; fi ;;
        *) die "unknown link key '$key' in '$2' (keys: delay jitter reorder loss down up)" ;;
    esac
}

profile_names() { local p out=""; for p in "${PROFILES[@]}"; do out+="${p%%=*} "; done; echo "${out% }"; }

rate_text() { # kbit/s -> N[k|m]bit or unlimited
    if (( $1 == 0 )); then echo unlimited
    elif (( $1 % 1000 == 0 )); then echo "$(($1 / 1000))mbit"
    else echo "$1kbit"; fi
}

tenths_text() { # tenths of a percent -> N[.N]
    local t=$(($1 / 10))
    (( $1 % 10 == 0 )) || t+=".$(($1 % 10))"
    echo "$t"
}

# The timing part of the canonical LINK: what the forwarder does (reorder only when set).
timing_link() {
    local t="delay=${L_DELAY}ms,jitter=${L_JITTER}ms"
    (( L_REORDER == 0 )) || t+=",reorder=$(tenths_text "$L_REORDER")"
    echo "$t"
}

# The parsed L_* as the canonical LINK (what `links` and `resolve` print).
canonical_link() {
    echo "$(timing_link),loss=$(tenths_text "$L_LOSS"),down=$(rate_text "$L_DOWN"),up=$(rate_text "$L_UP")"
}

find_trav() {
    local here; here=$(cd "$(dirname "$0")" && pwd)
    if [[ -n ${NATLAB_TRAV:-} ]]; then echo "$NATLAB_TRAV"
    elif [[ -x $here/../.build/debug/trav ]]; then echo "$here/../.build/debug/trav"
    else command -v trav || die "delay and jitter need trav (swift build; or set NATLAB_TRAV)"; fi
}

# tbf on IF's egress at KBIT kbit/s (0: no shaping). Burst: 10 ms at the rate, at least two
# full frames; queue: 100 ms at the rate (drop-tail beyond, like a modest modem buffer).
shape() { # LINKHOST IF KBIT
    if (( $3 == 0 )); then
        in_ns "$1" tc qdisc del dev "$2" root 2>/dev/null || true
        return 0
    fi
    local burst=$(( $3 * 1000 / 8 / 100 ))
    (( burst >= 3100 )) || burst=3100
    in_ns "$1" tc qdisc replace dev "$2" root tbf rate "$3kbit" burst "$burst" latency 100ms
}

# Random loss of L_LOSS tenths of a percent on both interfaces' egress: netdev egress hooks see
# frames the kernel bridge forwards and those the forwarder writes alike.
drop_randomly() { # LINKHOST
    local rule="numgen random mod 1000 < $L_LOSS drop" chain side
    (( L_LOSS < 1000 )) || rule="drop"
    {
        echo "table netdev natlab_link {}"
        echo "delete table netdev natlab_link"
        if (( L_LOSS > 0 )); then
            echo "table netdev natlab_link {"
            for chain in down up; do
                if [[ $chain == down ]]; then side=site; else side=inet; fi
                echo "  chain $chain {"
                echo "    type filter hook egress device \"$side\" priority 0; policy accept;"
                echo "    $rule"
                echo "  }"
            done
            echo "}"
        fi
    } | in_ns "$1" nft -f -
}

# Joins or splits the two interfaces with the kernel bridge "line".
line_bridge() { # LINKHOST on|off
    local side
    for side in site inet; do
        if [[ $2 == on ]]; then in_ns "$1" ip link set "$side" master line
        else in_ns "$1" ip link set "$side" nomaster; fi
    done
}

# Starts `trav lab-link` in LINKHOST (detached: the lab owns it; `down` kills it with the namespace)
# and waits, bounded, until it says it forwards.
start_forwarder() { # LINKHOST SITE
    local trav log="$STATE_DIR/$PREFIX.$2.link.log" tries
    trav=$(find_trav)
    : > "$log"
    (
        # Nothing inherited beyond stdio: a caller waiting for every holder of a descriptor it
        # gave us (Foundation's Process does) must not wait for the forwarder.
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            (( fd <= 2 )) || eval "exec $fd>&-"
        done
        exec ip netns exec "$(ns_of "$1")" setsid "$trav" lab-link --a site --b inet \
            --delay-ms "$L_DELAY" --jitter-ms "$L_JITTER" --reorder-permille "$L_REORDER"
    ) < /dev/null >> "$log" 2>&1 &
    for ((tries = 0; tries < 100; tries++)); do
        grep -q '^forwarding' "$log" && return 0
        kill -0 $! 2>/dev/null || break
        sleep 0.05
    done
    # Not `die`: a plain failure lets `up`'s ERR trap remove the half-built lab.
    echo "natlab: lab-link did not start in $1: $(tail -3 "$log")" >&2
    return 1
}

# Stops LINKHOST's forwarder (TERM, then KILL after at most 2 s), and nothing else running there
# (a tcpdump a person started in the line, say).
stop_forwarder() { # LINKHOST
    local ns pid pids tries
    ns=$(ns_of "$1")
    for ((tries = 0; tries < 20; tries++)); do
        pids=""
        for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
            [[ $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) == *" lab-link "* ]] && pids+=" $pid"
        done
        [[ -n $pids ]] || return 0
        if (( tries == 0 )); then kill -TERM $pids 2>/dev/null || true; fi
        sleep 0.1
    done
    kill -KILL $pids 2>/dev/null || true
}

# Applies the parsed L_* to SITE's line, given what it had before (OLD canonical LINK, or empty).
apply_link() { # SITE OLD
    local site=$1 old=$2 host="$1-link"
    local new; new=$(canonical_link)
    drop_randomly "$host"
    if [[ ${NATLAB_NETEM:-0} == 1 ]]; then
        apply_link_netem "$host"
    else
        shape "$host" site "$L_DOWN"
        shape "$host" inet "$L_UP"
        local timing; timing=$(timing_link)
        if [[ -z $old || ${old%%,loss=*} != "$timing" ]]; then
            stop_forwarder "$host"
            if (( L_DELAY > 0 || L_JITTER > 0 || L_REORDER > 0 )); then
                line_bridge "$host" off
                start_forwarder "$host" "$site"
            else
                line_bridge "$host" on
            fi
        fi
    fi
    # The record of what each line does now: replace this site's line.
    { grep -v "^$site " "$STATE_DIR/$PREFIX.links" 2>/dev/null || true; echo "$site $new"; } \
        > "$STATE_DIR/.$PREFIX.links.$$"
    mv "$STATE_DIR/.$PREFIX.links.$$" "$STATE_DIR/$PREFIX.links"
}

# Where the kernel has netem (NATLAB_NETEM=1): delay, jitter and rate in one netem qdisc per
# direction, the kernel bridge always on; loss stays nft's. (netem's jitter may reorder packets.)
apply_link_netem() { # LINKHOST
    local side rate
    stop_forwarder "$1"
    line_bridge "$1" on
    for side in site inet; do
        if [[ $side == site ]]; then rate=$L_DOWN; else rate=$L_UP; fi
        local -a args=(delay "${L_DELAY}ms")
        (( L_JITTER == 0 )) || args+=("${L_JITTER}ms")
        # netem's own reordering: that share goes out at once, ahead of the delayed rest.
        (( L_REORDER == 0 )) || args+=(reorder "$(tenths_text "$L_REORDER")%")
        (( rate == 0 )) || args+=(rate "${rate}kbit")
        if ! in_ns "$1" tc qdisc replace dev "$side" root netem "${args[@]}"; then
            # Not `die`: a plain failure lets `up`'s ERR trap remove the half-built lab.
            echo "natlab: netem is not available here (unset NATLAB_NETEM)" >&2
            return 1
        fi
    done
}

# Builds SITE's line: namespace NAME-link between ROUTER's wan and the internet bridge port sN.
build_line() { # ROUTER N SITE KIND
    local host="$3-link"
    new_ns "$host"
    veth "$1" wan "$host" site
    veth "$host" inet inet "s$2"
    in_ns inet ip link set "s$2" master br0
    # Frames reach the line one wire packet each (software segmentation upstream), so loss and the
    # forwarder count packets, not 64 KiB GSO bundles of them.
    in_ns "$1" ip link set wan gso_max_segs 1
    in_ns inet ip link set "s$2" gso_max_segs 1
    in_ns "$host" ip link add name line type bridge
    in_ns "$host" ip link set line up
    host_line "$host $3 $4 link -"
}

cmd_link() {
    [[ $# -eq 3 ]] || die "usage: link PREFIX SITE LINK"
    PREFIX=$1; check_prefix "$PREFIX"
    local site=$2 old
    [[ -e $STATE_DIR/$PREFIX.owner ]] || die "no lab '$PREFIX'"
    old=$(awk -v s="$site" '$1 == s { print $2 }' "$STATE_DIR/$PREFIX.links" 2>/dev/null || true)
    [[ -n $old ]] || die "site '$site' of lab '$PREFIX' has no link line (build it as $site:KIND@ideal)"
    parse_link "$3"
    apply_link "$site" "$old"
}

cmd_roam() { # PREFIX HOST SITE
    need_host "$1" "${2:-}"
    local host=$2 site=${3:-} router gw
    [[ -n $site ]] || die "missing SITE"
    router="$site-router"
    need_host "$PREFIX" "$router"
    gw=$(in_ns "$router" ip -4 -o addr show dev lan | awk '{ print $4; exit }')
    [[ -n $gw ]] || die "site '$site' has no LAN"
    veth "$router" "roam-${host##*-}" "$host" roam0
    in_ns "$router" ip link set "roam-${host##*-}" master lan
    in_ns "$host" ip addr add "${gw%.*}.200/${gw#*/}" dev roam0
    in_ns "$host" ip link set eth0 down
    in_ns "$host" ip route replace default via "${gw%/*}"
}

# LAN side of a router: bridge "lan" with GW/24 and COUNT hosts NAME-h1.. at BASE.(10+i).
lan_hosts() { # ROUTER NAME KIND COUNT NET3 (first three octets) GW_LAST MASK FIRST_HOST
    local router=$1 name=$2 kind=$3 count=$4 net=$5 gw=$6 mask=$7 first=$8 i host addr
    in_ns "$router" ip link add name lan type bridge
    in_ns "$router" ip addr add "$net.$gw/$mask" dev lan
    in_ns "$router" ip link set lan up
    for ((i = 1; i <= count; i++)); do
        host="$name-h$i"; addr="$net.$((first + i - 1))"
        new_ns "$host"
        veth "$router" "h$i" "$host" eth0
        in_ns "$router" ip link set "h$i" master lan
        in_ns "$host" ip addr add "$addr/$mask" dev eth0
        in_ns "$host" ip route add default via "$net.$gw"
        host_line "$host $name $kind host $addr"
    done
}

# Router WAN on the internet bridge as port sN; with a LINK, through the site's line (NAME-link).
wan_on_bridge() { # ROUTER N [SITE KIND LINK]
    if [[ -n ${5:-} ]]; then
        build_line "$1" "$2" "$3" "$4"
    else
        veth "$1" wan inet "s$2"
        in_ns inet ip link set "s$2" master br0
    fi
    in_ns "$1" ip addr add "203.0.113.$((100 + $2))/24" dev wan
    in_ns "$1" ip route add default via 203.0.113.1
}

build_site() { # N NAME KIND COUNT [LINK]
    local n=$1 name=$2 kind=$3 count=$4 link=${5:-} router="$2-router"
    new_ns "$router"
    case $kind in
        open)
            wan_on_bridge "$router" "$n" "$name" "$kind" "$link"
            lan_hosts "$router" "$name" "$kind" "$count" 198.51.100 $((16 * n + 1)) 28 $((16 * n + 2))
            in_ns inet ip route add "198.51.100.$((16 * n))/28" via "203.0.113.$((100 + n))"
            # A plain router, no NAT, no firewall: nothing but forwarding.
            host_line "$router $name $kind router 203.0.113.$((100 + n)),198.51.100.$((16 * n + 1))" ;;
        double-nat)
            local carrier="$name-carrier"
            new_ns "$carrier"
            wan_on_bridge "$carrier" "$n" "$name" "$kind" "$link"
            veth "$carrier" lan "$router" wan
            in_ns "$carrier" ip addr add "100.64.$n.1/24" dev lan
            in_ns "$router" ip addr add "100.64.$n.2/24" dev wan
            in_ns "$router" ip route add default via "100.64.$n.1"
            load_rules "$carrier" port-restricted-cone      # carrier-grade NAT: EIM masquerade
            router_sysctls "$carrier"
            host_line "$carrier $name $kind carrier 203.0.113.$((100 + n)),100.64.$n.1"
            load_rules "$router" port-restricted-cone
            lan_hosts "$router" "$name" "$kind" "$count" "192.168.$n" 1 24 10
            host_line "$router $name $kind router 100.64.$n.2,192.168.$n.1" ;;
        *)
            wan_on_bridge "$router" "$n" "$name" "$kind" "$link"
            load_rules "$router" "$kind"
            lan_hosts "$router" "$name" "$kind" "$count" "10.$n.0" 1 24 10
            host_line "$router $name $kind router 203.0.113.$((100 + n)),10.$n.0.1" ;;
    esac
    router_sysctls "$router"
    if [[ -n $link ]]; then parse_link "$link"; apply_link "$name" ""; fi
}

cmd_up() {
    [[ $# -ge 1 ]] || die "usage: up PREFIX SITE_SPEC..."
    PREFIX=$1; shift; check_prefix "$PREFIX"
    [[ $# -le $MAX_SITES ]] || die "at most $MAX_SITES sites"
    # Parse every spec before creating anything.
    local -a names=() kinds=() counts=() links=()
    local spec n=0 name kind count f1 f2 f3 link
    for spec in "$@"; do
        n=$((n + 1))
        link=""
        [[ $spec != *@* ]] || { link=${spec#*@}; [[ -n $link ]] || die "empty LINK in '$spec' (e.g. @ideal)"; }
        IFS=: read -r f1 f2 f3 <<< "${spec%%@*}"
        if [[ " $KINDS " == *" $f1 "* ]]; then name="s$n" kind=$f1 count=${f2:-1}
        else name=$f1 kind=${f2:-} count=${f3:-1}; fi
        [[ " $KINDS " == *" $kind "* ]] || die "unknown kind '${kind:-$f1}' in '$spec' (kinds: $KINDS)"
        [[ $name =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "bad site name '$name' in '$spec'"
        [[ $name != cloud && $name != inet ]] || die "site name '$name' is reserved"
        [[ " ${names[*]} " != *" $name "* ]] || die "duplicate site name '$name'"
        [[ $count =~ ^[1-4]$ ]] || die "hosts must be 1..4 in '$spec'"
        [[ -z $link ]] || (parse_link "$link") || exit 1
        names+=("$name"); kinds+=("$kind"); counts+=("$count"); links+=("$link")
    done
    mkdir -p "$STATE_DIR"
    [[ ! -e $STATE_DIR/$PREFIX.owner ]] || die "prefix '$PREFIX' is in use (natlab.sh down $PREFIX)"
    local owner=${NATLAB_OWNER_PID:-$PPID}
    # Written atomically (rename): a concurrent cleanup-stale must never read a half-written file.
    echo "$owner $(start_time "$owner" || echo 0) $*" > "$STATE_DIR/.$PREFIX.owner.$$"
    mv "$STATE_DIR/.$PREFIX.owner.$$" "$STATE_DIR/$PREFIX.owner"
    : > "$STATE_DIR/$PREFIX.ns"; : > "$STATE_DIR/$PREFIX.hosts"; : > "$STATE_DIR/$PREFIX.links"
    trap 'echo "natlab: up failed at line $LINENO; removing $PREFIX" >&2; cmd_down "$PREFIX" >/dev/null 2>&1' ERR

    # The internet: a bridge, plus routing to open sites' public subnets.
    new_ns inet
    in_ns inet ip link add name br0 type bridge
    in_ns inet ip addr add 203.0.113.1/24 dev br0
    in_ns inet ip link set br0 up
    in_ns inet sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
        net.ipv4.conf.br0.send_redirects=0
    host_line "inet - - internet 203.0.113.1"

    # The cloud: two addresses, for RFC 5780 (CHANGE-REQUEST needs an alternate IP).
    new_ns cloud
    veth cloud eth0 inet cloud
    in_ns inet ip link set cloud master br0
    in_ns cloud ip addr add 203.0.113.10/24 dev eth0
    in_ns cloud ip addr add 203.0.113.11/24 dev eth0
    in_ns cloud ip route add default via 203.0.113.1
    host_line "cloud - - cloud 203.0.113.10,203.0.113.11"

    local i
    for ((i = 0; i < n; i++)); do
        build_site $((i + 1)) "${names[i]}" "${kinds[i]}" "${counts[i]}" "${links[i]}"
    done
    trap - ERR
    cat "$STATE_DIR/$PREFIX.hosts"
}

# Kill every process inside NS: TERM, then KILL after at most 2 s (bounded).
kill_ns_pids() {
    local ns=$1 pids tries
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] || return 0
    kill -TERM $pids 2>/dev/null || true
    for ((tries = 0; tries < 20; tries++)); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -n $pids ]] || return 0
        sleep 0.1
    done
    kill -KILL $pids 2>/dev/null || true
}

cmd_down() {
    PREFIX=${1:-}; check_prefix "$PREFIX"
    local ns list
    # Only namespaces this script recorded: never anything else that shares the prefix.
    # Read up front and tolerate a vanished file: two cleanups may race on one stale lab.
    list=$(cat "$STATE_DIR/$PREFIX.ns" 2>/dev/null || true)
    for ns in $list; do
        kill_ns_pids "$ns"
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -f "$STATE_DIR/$PREFIX".*.link.log    # PREFIX has no dot: only this lab's forwarder logs
    rm -f "$STATE_DIR/$PREFIX".*.miniupnpd.*  # and its port-mapping daemons' files
    rm -f "$STATE_DIR/$PREFIX.owner" "$STATE_DIR/$PREFIX.ns" "$STATE_DIR/$PREFIX.hosts" "$STATE_DIR/$PREFIX.links"
}

lab_prefixes() {
    local f
    for f in "$STATE_DIR"/*.owner; do
        [[ -e $f ]] || continue
        f=${f##*/}; echo "${f%.owner}"
    done
}

cmd_list() {
    local p pid st spec state
    printf '%-14s %-8s %-6s %s\n' PREFIX OWNER STATE SITES
    for p in $(lab_prefixes); do
        read -r pid st spec < "$STATE_DIR/$p.owner" || true
        if owner_alive "$p"; then state=alive; else state=stale; fi
        printf '%-14s %-8s %-6s %s\n' "$p" "${pid:-?}" "$state" "${spec:-}"
    done
}

cmd_cleanup_stale() {
    local p
    for p in $(lab_prefixes); do
        if ! owner_alive "$p"; then
            echo "natlab: removing stale lab $p"
            cmd_down "$p"
        fi
    done
}

need_host() { # PREFIX HOST
    PREFIX=${1:-}; check_prefix "$PREFIX"
    [[ -n ${2:-} ]] || die "missing HOST"
    local all; all=$(ip netns list)      # not piped into grep -q: SIGPIPE + pipefail lies
    [[ $'\n'$all$'\n' == *$'\n'"$(ns_of "$2")"[$' \n']* ]] || die "no host '$2' in lab '$PREFIX'"
}

# miniupnpd in SITE's router, exec'd in the foreground (so the caller owns and stops it).
cmd_upnpd() { # PREFIX SITE STUN_IP...
    [[ $# -ge 3 ]] || die "usage: upnpd PREFIX SITE STUN_IP..."
    need_host "$1" "$2-router"
    local site=$2 router="$2-router" ns wan lan base stun
    shift 2
    stun=$(IFS=,; echo "$*")
    command -v miniupnpd >/dev/null || die "miniupnpd not installed (apt-get install miniupnpd-nftables)"
    ns=$(ns_of "$router")
    wan=$(ip -n "$ns" -4 -o addr show dev wan | awk '{ split($4, a, "/"); print a[1]; exit }')
    lan=$(ip -n "$ns" -4 -o addr show dev lan | awk '{ print $4; exit }')
    [[ -n $wan && -n $lan ]] || die "router $router has no wan/lan address"
    base="$STATE_DIR/$PREFIX.$site.miniupnpd"
    cat > "$base.conf" <<EOF
ext_ifname=wan
listening_ip=lan
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=no
lease_file=$base.leases
uuid=$(cat /proc/sys/kernel/random/uuid)
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
ext_perform_stun=yes
ext_stun_host=$1
ext_stun_port=3478
allow 1024-65535 ${lan%.*}.0/${lan#*/} 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
    in_ns "$router" nft -f - <<EOF
table inet miniupnpd {
    chain forward {
        type filter hook forward priority filter - 1; policy accept;
        jump miniupnpd
    }
    chain miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority dstnat - 1; policy accept;
        jump prerouting_miniupnpd
    }
    chain prerouting_miniupnpd {
    }
    chain postrouting {
        type nat hook postrouting priority srcnat - 1; policy accept;
        jump postrouting_miniupnpd
    }
    chain postrouting_miniupnpd {
    }
}
EOF
    # Its STUN check must see neither NAT nor filter: the router's own STUN traffic passes untouched.
    in_ns "$router" nft insert rule ip natlab postrouting oifname "wan" ip saddr "$wan" ip daddr "{ $stun }" accept
    in_ns "$router" nft insert rule ip natlab input iifname "wan" ip saddr "{ $stun }" meta l4proto udp accept
    exec ip netns exec "$ns" miniupnpd -d -f "$base.conf" -P "$base.pid"
}

cmd=${1:-help}; shift || true
case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    upnpd) cmd_upnpd "$@" ;;
    exec)
        [[ $# -ge 3 ]] || die "usage: exec PREFIX HOST CMD..."
        need_host "$1" "$2"; ns=$(ns_of "$2"); shift 2
        exec ip netns exec "$ns" "$@" ;;
    shell)
        need_host "$@"
        exec ip netns exec "$(ns_of "$2")" env PS1="[natlab $1 $2] \\w# " bash --norc -i ;;
    hosts) PREFIX=${1:-}; check_prefix "$PREFIX"; cat "$STATE_DIR/$PREFIX.hosts" ;;
    addr)
        PREFIX=${1:-}; check_prefix "$PREFIX"
        awk -v h="${2:-}" '$1 == h { split($5, a, ","); print a[1]; found = 1 }
            END { exit !found }' "$STATE_DIR/$PREFIX.hosts" || die "no host '${2:-}' in lab '$PREFIX'" ;;
    rules) need_host "$@"; exec ip netns exec "$(ns_of "$2")" nft list ruleset ;;
    conntrack) need_host "$@"; exec ip netns exec "$(ns_of "$2")" conntrack -L ;;
    list) cmd_list ;;
    cleanup-stale) cmd_cleanup_stale ;;
    kinds) echo "$KINDS" | tr ' ' '\n' ;;
    link) cmd_link "$@" ;;
    roam) cmd_roam "$@" ;;
    links)
        PREFIX=${1:-}; check_prefix "$PREFIX"
        [[ -e $STATE_DIR/$PREFIX.owner ]] || die "no lab '$PREFIX'"
        cat "$STATE_DIR/$PREFIX.links" 2>/dev/null || true ;;
    profiles)
        for p in "${PROFILES[@]}"; do parse_link "${p%%=*}"; echo "${p%%=*} $(canonical_link)"; done ;;
    resolve) [[ $# -eq 1 ]] || die "usage: resolve LINK"; parse_link "$1"; canonical_link ;;
    help|-h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac

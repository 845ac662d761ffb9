"""``cutover keepalived``: the generated files are valid keepalived configuration, the notify script assigns the
reserved IP as it says, and the lab runs exactly these files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from bot.plan import load_plan, parse_plan
from bot.standins.lab import ADDRESSES, DROPLETS, FLOATING_IP
from bot.standins.metadata import MetadataStandIn
from bot.switch.keepalived import Options, WiringError, generate
from bot.waiting import wait_until
from tests.golive_support import lab_plan
from tests.helpers import to_toml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "cutover.example.toml"


def example_with_addresses(tmp_path: Path) -> Path:
    assert 'private_address = "10.110.0.2"' in EXAMPLE.read_text()
    return EXAMPLE


def example_without_addresses(tmp_path: Path) -> Path:
    path = tmp_path / "cutover.toml"
    path.write_text("\n".join(line for line in EXAMPLE.read_text().splitlines()
                              if not line.startswith("private_address")))
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


def test_the_command_writes_both_servers_files_and_says_how_to_install_them(tmp_path):
    plan = example_with_addresses(tmp_path)
    result = cli("keepalived", "--plan", str(plan), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for role in ("old", "new"):
        for name in ("keepalived.conf", "cutover-check.sh", "cutover-notify.sh"):
            assert (tmp_path / "out" / role / name).exists(), (role, name)
        assert (tmp_path / "out" / role / "cutover-notify.sh").stat().st_mode & 0o111
    conf = (tmp_path / "out" / "old" / "keepalived.conf").read_text()
    assert "unicast_src_ip 10.110.0.2" in conf and "priority 254" in conf and "interface eth1" in conf
    # The example has no private VIP: DigitalOcean's form, VRRPv2 (v3 needs an address to carry), whole seconds.
    assert "version 2" in conf and "advert_int 1\n" in conf and "virtual_ipaddress" not in conf
    assert "/var/www/health/state" in (tmp_path / "out" / "old" / "cutover-check.sh").read_text()
    assert 'vrrp_track_file cutover_flip {\n    file "/var/www/health/keepalived-track"' in conf
    assert "track_file {\n        cutover_flip\n    }" in conf
    assert "/etc/keepalived/cutover-digitalocean-token" in result.stdout and "install" in result.stdout
    # The install steps make what the bot writes over SSH as the host's user (the health and track files, by a
    # rename in their folder) that user's, let it read the VRRP state, and start old before new.
    steps = result.stdout
    assert ("install -d -m 0755 -o deploy /var/www/health && echo true > /var/www/health/state && chown deploy "
            "/var/www/health/state") in steps
    assert "echo 0 > /var/www/health/keepalived-track && chown deploy /var/www/health/keepalived-track" in steps
    assert "install -d -m 0755 /run/keepalived" in steps or "install -d -m 0755 /etc/keepalived" in steps
    assert steps.index("`old` (old)") < steps.index("`new` (new)") and "Old first" in steps


def test_a_flip_lowers_old_below_new_and_a_broken_new_server_is_fault(tmp_path):
    """Old steps down by priority, so it keeps the address until new takes it; new in FAULT never takes it."""
    files = generate(load_plan(example_with_addresses(tmp_path)))
    old, new = files["old"]["keepalived.conf"], files["new"]["keepalived.conf"]
    assert "priority 254" in old and "priority 253" in new
    # On old, a failed check and a flipped track file each take 2 off: 252 (or 250) is below new's 253.
    assert old.count("    weight -2  #") == 2 and "weight 0" not in old
    # On new, either is FAULT.
    assert new.count("    weight 0  #") == 2 and "weight -" not in new


@pytest.mark.vrrp
def test_in_the_lab_old_keeps_the_address_until_new_takes_it(lab):
    """Make-before-break: after a flip the old server still holds the VIP, and it lets it go because it heard the
    new one advertise as master, never by entering FAULT (with a flip that puts old in FAULT, it drops the VIP at
    once and nobody holds it until new's takeover)."""
    log = lab.servers["old"].dir / "keepalived.log"
    before = len(log.read_text().splitlines())
    lab.set_health("old", "false")
    (lab.servers["old"].dir / "health.track").write_text("1\n")
    wait_until(lambda: "Changing effective priority from 254 to 252" in log.read_text(), 10, "old's lower priority")
    assert lab.vip_holder() == "old"  # new waits its master-down interval (1.5 s here); old serves meanwhile
    wait_until(lambda: lab.vip_holder() == "new", 15, "the VIP on new alone")
    after = log.read_text().splitlines()[before:]
    assert not any("Entering FAULT STATE" in line for line in after), after
    heard = next(i for i, line in enumerate(after)
                 if f"Master received advert from {ADDRESSES['new']} with higher priority 253" in line)
    left = next(i for i, line in enumerate(after) if "Entering BACKUP STATE" in line)
    assert heard < left, after


def test_a_plan_without_private_addresses_is_refused_by_name(tmp_path):
    result = cli("keepalived", "--plan", str(example_without_addresses(tmp_path)), "--out", str(tmp_path / "out"),
                 cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hosts.old.private_address: expected the address keepalived speaks VRRP on" in result.stderr
    assert "hosts.new.private_address" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("vip", [None, "10.110.0.100"], ids=["digitalocean-form", "vip-form"])
def test_the_generated_configuration_passes_keepalived_config_test(tmp_path, vip):
    keepalived = shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")
    if keepalived is None:
        pytest.skip("keepalived is not installed (Debian package keepalived)")
    data = tomllib.loads(EXAMPLE.read_text())
    if vip:
        data["failover"]["vip"] = vip
    plan = parse_plan(data, str(EXAMPLE))
    for role, files in generate(plan, Options(install_dir=str(tmp_path / "etc"))).items():
        d = tmp_path / "etc"
        d.mkdir(exist_ok=True)
        for name, content in files.items():
            (d / name).write_text(content)
            (d / name).chmod(0o755)
        result = subprocess.run([keepalived, "--config-test", "-f", str(d / "keepalived.conf")],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{role}: {result.stdout}{result.stderr}"


@pytest.fixture
def metadata(do):
    service = MetadataStandIn(do, DROPLETS["old"], FLOATING_IP).start()
    yield service
    service.stop()


@pytest.fixture
def notify(tmp_path, do, metadata):
    """The old server's generated notify script, pointed at the DigitalOcean stand-in and its droplet's metadata."""
    if shutil.which("curl") is None:
        pytest.skip("the notify script needs curl (Debian package curl)")
    do.add_droplet(DROPLETS["old"], "web-old-01")
    do.add_droplet(DROPLETS["new"], "web-new-01")
    do.add_ip(FLOATING_IP, DROPLETS["new"])
    plan = parse_plan({
        "slack": {"channel": "C0LAUNCH", "operators": ["U0ALICE"], "approvers": ["U0BOB", "U0CAROL"],
                  "required_approvals": 2},
        "hosts": {"old": {"address": "127.0.0.1", "user": "deploy", "private_address": "10.0.0.2",
                          "vrrp_state_file": str(tmp_path / "state"), "interface": "eth1",
                          "metadata_url": f"http://127.0.0.1:{metadata.port}/metadata/v1"},
                  "new": {"address": "127.0.0.1", "user": "deploy", "private_address": "10.0.0.3",
                          "interface": "eth1"}},
        "failover": {"floating_ip": FLOATING_IP, "old": "old", "new": "new", "health_file": "/srv/health",
                     "probe_url": "http://127.0.0.1/health.php", "new_marker": "web-new-01"},
        "digitalocean": {"old_droplet": DROPLETS["old"], "new_droplet": DROPLETS["new"]},
    }, "wiring plan")
    (tmp_path / "token").write_text(do.token + "\n")
    options = Options(install_dir=str(tmp_path), digitalocean_api=do.end_point, token_file=str(tmp_path / "token"),
                      notify_log=str(tmp_path / "notify.log"))
    script = tmp_path / "cutover-notify.sh"
    script.write_text(generate(plan, options)["old"]["cutover-notify.sh"])
    script.chmod(0o755)
    return script


def run_notify(script: Path, state: str) -> None:
    subprocess.run([str(script), "INSTANCE", "cutover", state, "150"], check=True, timeout=10)


def test_the_notify_script_records_the_state_and_assigns_the_reserved_ip_on_master(notify, do, tmp_path):
    run_notify(notify, "BACKUP")
    assert (tmp_path / "state").read_text() == "BACKUP\n"
    assert do.requests == []
    do.fail_next(500, times=2, path="reserved_ips/", method="POST")
    run_notify(notify, "MASTER")
    assert (tmp_path / "state").read_text() == "MASTER\n"
    wait_until(lambda: do.holder(FLOATING_IP) == DROPLETS["old"] and not do.busy(FLOATING_IP), 20, "the assignment")
    log = (tmp_path / "notify.log").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in log] == [
        f"assign {FLOATING_IP} to droplet {DROPLETS['old']} (reserved_ips): attempt 1: HTTP 500",
        f"assign {FLOATING_IP} to droplet {DROPLETS['old']} (reserved_ips): attempt 2: HTTP 500",
        f"assign {FLOATING_IP} to droplet {DROPLETS['old']} (reserved_ips): attempt 3: HTTP 201"], log


def test_the_notify_script_falls_back_to_floating_ips_and_stops_when_no_longer_master(notify, do, metadata,
                                                                                      tmp_path):
    do.serves_reserved_ips = False
    run_notify(notify, "MASTER")
    wait_until(lambda: do.holder(FLOATING_IP) == DROPLETS["old"], 20, "the assignment")
    assert "(floating_ips): attempt 1: HTTP 201" in (tmp_path / "notify.log").read_text()
    metadata.say("false")  # as if the IP had gone elsewhere: the script keeps asking
    do.fail_next(503, times=100, path="_ips/", method="POST")
    run_notify(notify, "MASTER")
    time.sleep(1.5)
    run_notify(notify, "BACKUP")
    wait_until(lambda: "no longer MASTER" in (tmp_path / "notify.log").read_text(), 10, "the retries to stop")


def test_a_master_hearing_a_lower_priority_advert_takes_the_reserved_ip_back_unless_it_has_it(notify, do, metadata,
                                                                                            tmp_path):
    """keepalived runs the script as MASTER_RX_LOWER_PRI after a split: it records no state, and assigns the IP
    to this droplet only while the droplet's metadata says the IP is elsewhere."""
    run_notify(notify, "MASTER")
    wait_until(lambda: do.holder(FLOATING_IP) == DROPLETS["old"] and not do.busy(FLOATING_IP), 20, "the assignment")
    posts = len([r for r in do.requests if r["method"] == "POST"])
    run_notify(notify, "MASTER_RX_LOWER_PRI")
    time.sleep(1)
    assert len([r for r in do.requests if r["method"] == "POST"]) == posts  # it has the IP: nothing to do
    do.ips[FLOATING_IP] = DROPLETS["new"]  # the backup took it during a split
    run_notify(notify, "MASTER_RX_LOWER_PRI")
    wait_until(lambda: do.holder(FLOATING_IP) == DROPLETS["old"] and not do.busy(FLOATING_IP), 20, "the re-assert")
    assert (tmp_path / "state").read_text() == "MASTER\n"
    assert "the peer was master too; asserting" in (tmp_path / "notify.log").read_text()


def test_without_a_private_vip_keepalived_binds_no_address_and_with_one_it_carries_it(tmp_path):
    plan = load_plan(example_with_addresses(tmp_path))
    assert plan.failover.vip is None
    files = generate(plan)
    for role in ("old", "new"):
        conf = files[role]["keepalived.conf"]
        assert "virtual_ipaddress" not in conf and "interface eth1" in conf, conf
        assert 'notify_master_rx_lower_pri "/etc/keepalived/cutover-notify.sh INSTANCE cutover MASTER_RX_LOWER_PRI' \
            in conf and "higher_prio_send_advert true" in conf
    data = tomllib.loads(EXAMPLE.read_text())
    data["failover"]["vip"] = "10.110.0.100"
    conf = generate(parse_plan(data, "vip plan"))["new"]["keepalived.conf"]
    assert "virtual_ipaddress {\n        10.110.0.100/32 dev eth1\n    }" in conf


def test_the_interface_is_the_plans_or_read_from_the_host(tmp_path, lab):
    data = tomllib.loads(EXAMPLE.read_text())
    for host in ("old", "new"):
        del data["hosts"][host]["interface"]
    with pytest.raises(WiringError) as refused:
        generate(parse_plan(data, "cutover.toml"))
    assert "cutover.toml: hosts.old.interface: missing; expected the network interface that holds `old`'s private " \
           "address 10.110.0.2" in str(refused.value) and "`cutover keepalived --online`" in str(refused.value)
    plan = lab_plan(lab)
    for role in ("old", "new"):
        del plan["hosts"][role]["interface"]
    path = tmp_path / "lab.toml"
    path.write_text(to_toml(plan))
    result = cli("keepalived", "--plan", str(path), "--out", str(tmp_path / "out"), "--online", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "`old`: its private address is on eth1" in result.stdout
    assert "interface eth1" in (tmp_path / "out" / "new" / "keepalived.conf").read_text()

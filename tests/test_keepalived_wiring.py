"""``cutover keepalived``: the generated files are valid keepalived configuration, the notify script assigns the
reserved IP as it says, and the lab runs exactly these files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.plan import load_plan, parse_plan
from bot.standins.lab import ADDRESSES, DROPLETS, FLOATING_IP
from bot.switch.keepalived import Options, generate
from bot.waiting import wait_until

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
    assert "unicast_src_ip 10.110.0.2" in conf and "priority 254" in conf and "advert_int 0.2" in conf
    assert "/var/www/health/state" in (tmp_path / "out" / "old" / "cutover-check.sh").read_text()
    assert 'vrrp_track_file cutover_flip {\n    file "/var/www/health/keepalived-track"' in conf
    assert "track_file {\n        cutover_flip\n    }" in conf
    assert "/etc/keepalived/cutover-digitalocean-token" in result.stdout and "install" in result.stdout


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


def test_the_generated_configuration_passes_keepalived_config_test(tmp_path):
    keepalived = shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")
    if keepalived is None:
        pytest.skip("keepalived is not installed (Debian package keepalived)")
    plan = load_plan(example_with_addresses(tmp_path))
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
def notify(tmp_path, do):
    """The old server's generated notify script, pointed at the DigitalOcean stand-in."""
    if shutil.which("curl") is None:
        pytest.skip("the notify script needs curl (Debian package curl)")
    do.add_droplet(DROPLETS["old"], "web-old-01")
    do.add_droplet(DROPLETS["new"], "web-new-01")
    do.add_ip(FLOATING_IP, DROPLETS["new"])
    plan = parse_plan({
        "slack": {"channel": "C0LAUNCH", "operators": ["U0ALICE"], "approvers": ["U0BOB", "U0CAROL"],
                  "required_approvals": 2},
        "hosts": {"old": {"address": "127.0.0.1", "user": "deploy", "private_address": "10.0.0.2",
                          "vrrp_state_file": str(tmp_path / "state")},
                  "new": {"address": "127.0.0.1", "user": "deploy", "private_address": "10.0.0.3"}},
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


def test_the_notify_script_falls_back_to_floating_ips_and_stops_when_no_longer_master(notify, do, tmp_path):
    do.serves_reserved_ips = False
    run_notify(notify, "MASTER")
    wait_until(lambda: do.holder(FLOATING_IP) == DROPLETS["old"], 20, "the assignment")
    assert "(floating_ips): attempt 1: HTTP 201" in (tmp_path / "notify.log").read_text()
    do.fail_next(503, times=100, path="_ips/", method="POST")
    run_notify(notify, "MASTER")
    time.sleep(1.5)
    run_notify(notify, "BACKUP")
    wait_until(lambda: "no longer MASTER" in (tmp_path / "notify.log").read_text(), 10, "the retries to stop")

"""The apps stage's bare-metal part (reference §4.10): Minio on the `s3` host, restic OS backups on every Pi.

- Minio: a `minio` system user, data under /storage/minio, TLS from the controller's local CA
  (`picluster.stages.apps.pki`), the root login in a 0600 env file, a systemd unit, API on :9091 and console
  on :9092; buckets restic, k3s-longhorn and k3s-velero, each with its own user and a policy limited to its
  bucket. The minio and mc binaries come from the vendor's download site, checked against the digests pinned
  in k8s/versions.yml (never a checksum from that site); where that site is unreachable the binary, the
  service and the provisioning are an explicit skip.
- restic: the pinned GitHub build in /usr/local/bin (Ubuntu 20.04's package, 0.9.6, is too old), checked
  against the digest pinned in k8s/versions.yml; a 0600 env file (repository on Minio, its password, the S3
  login), the CA, a backup script, and a systemd timer (daily 03:00) on every host; the repository
  check/forget/prune timer (daily 06:00) on the gateway only, since those take an exclusive lock. Where
  GitHub is unreachable the binary is an explicit skip and systemd skips the timer's runs.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from picluster import secrets
from picluster.envfile import env_file
from picluster.inventory import Host, Inventory
from picluster.remote import AnyStep, Change, Command, Decision, Ok, ProbeOutput, StepError, changed_mark
from picluster.stages.apps.pki import ServerPki
from picluster.state import Apt, Directory, File, Service, User
from picluster.state.batch import Batch
from picluster.state.skip import NotConfigured, OnlyIf, skipped
from picluster.versions import Binary, binary

MINIO_BIN, MC_BIN, RESTIC_BIN = "/usr/local/bin/minio", "/usr/local/bin/mc", "/usr/local/bin/restic"
MINIO_CONF, MINIO_SSL, MINIO_DATA = "/etc/minio/minio.conf", "/etc/minio/ssl", "/storage/minio"
MINIO_USERS = "/etc/minio/users.env"
MINIO_UNIT = "/etc/systemd/system/minio.service"
RESTIC_DIR = "/etc/restic"
RESTIC_ENV, RESTIC_CA = f"{RESTIC_DIR}/restic.env", f"{RESTIC_DIR}/ca.pem"
RESTIC_BACKUP, RESTIC_CLEAN = f"{RESTIC_DIR}/restic-backup.sh", f"{RESTIC_DIR}/restic-clean.sh"
UNITS = "/etc/systemd/system"
BUCKETS = {"restic": "restic", "longhorn": "k3s-longhorn", "velero": "k3s-velero"}   # user -> bucket
MC_ENV = (f'set -a; . {MINIO_CONF}; set +a; export MC_HOST_local="https://$MINIO_ROOT_USER:$MINIO_ROOT_PASSWORD'
          '@127.0.0.1:9091"')
HAS_MINIO = f"test -x {MINIO_BIN} && test -x {MC_BIN}"
NO_MINIO = "minio or mc is not installed (their download site was unreachable: see the 'binary' steps)"


def minio_host(inv: Inventory) -> Host | None:
    """The host whose address the registry's `s3` name points at."""
    s3 = inv.cluster.services.get("s3")
    return next((h for h in inv.hosts.values() if h.ip == s3), None)


# --- vendor binaries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinaryFacts:
    version: str
    arch: str
    reachable: bool
    reach_code: int


class VendorBinary:
    """Ensure `path` is the pinned vendor build of `binary` (k8s/versions.yml), downloaded and sha256-checked.

    The digest is the one pinned in versions.yml, never a checksum fetched from the download site: an
    architecture without a pin is refused. Where the download site cannot be reached from the host (no
    internet, as in the lab), an explicit skip.
    """

    def __init__(self, binary: Binary, path: str, version_args: str = "--version") -> None:
        self.binary, self.path, self.version_args = binary, path, version_args

    @property
    def name(self) -> str:
        return f"binary {self.path}"

    @property
    def site(self) -> str:
        """The download site (scheme and host) of the binary's URL."""
        return "/".join(self.binary.url_template.split("/")[:3])

    def probes(self) -> Mapping[str, str]:
        version = f"{shlex.quote(self.path)} {self.version_args} 2>/dev/null | head -n 3"
        # The site is only asked when the build is not the pinned one; any HTTP answer means reachable.
        reach = (f"if {version} | grep -qwF -- {shlex.quote(self.binary.version)}; then exit 0; fi; "
                 f"curl -sSI --connect-timeout 5 --max-time 10 -o /dev/null {shlex.quote(self.site)}/")
        return {"version": version, "arch": "dpkg --print-architecture", "reach": reach}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> BinaryFacts:
        return BinaryFacts(outputs["version"].stdout, outputs["arch"].stdout.strip() or "arm64",
                           outputs["reach"].ok, outputs["reach"].exit_code)

    def decide(self, facts: BinaryFacts) -> Decision:
        b = self.binary
        if b.version in facts.version.split():
            return Ok(f"{self.path} is {b.name} {b.version}")
        if facts.reach_code == 127:
            raise StepError(f"curl is missing on this host: it is needed to download {self.path} (apt install curl)")
        if not facts.reachable:
            return skipped(f"{self.site} is unreachable from this host (curl exit {facts.reach_code}); "
                           f"{self.path} {b.version} not installed")
        url = b.url(facts.arch)
        if facts.arch not in b.sha256:
            raise StepError(f"no sha256 pinned for {b.name} {b.version} on {facts.arch}: add "
                            f"binaries.{b.name}.sha256.{facts.arch} to k8s/versions.yml, confirmed from two "
                            "independent sources (a checksum from the download site itself proves nothing)")
        fetch_sum = [f"sum={b.sha256[facts.arch]}"]
        unpack = ['bunzip2 -c "$tmp/dl" >"$tmp/bin"'] if url.endswith(".bz2") else ['mv "$tmp/dl" "$tmp/bin"']
        script = "\n".join([
            "set -e", 'tmp=$(mktemp -d)', 'trap \'rm -rf "$tmp"\' EXIT',
            f'curl -fsSL --retry 3 -o "$tmp/dl" {shlex.quote(url)}',
            *fetch_sum,
            'echo "$sum  $tmp/dl" | sha256sum -c --quiet -',
            *unpack,
            # a new inode renamed over the old: a running binary cannot be overwritten (text file busy)
            f'install -m 0755 "$tmp/bin" {shlex.quote(self.path + ".new")}',
            f'mv -f {shlex.quote(self.path + ".new")} {shlex.quote(self.path)}',
        ])
        was = facts.version.splitlines()[0] if facts.version.strip() else "not installed"
        return Change(f"{self.path}: {was} -> {b.name} {b.version} ({url}, sha256-checked)", [Command(script)],
                      sets=frozenset({changed_mark(self.path)}))   # a service running it restarts


# --- Minio buckets, users and policies ----------------------------------------------------------------


def bucket_policy(bucket: str, *, velero: bool = False) -> str:
    """An IAM policy limited to one bucket (Velero's as in the reference: objects, plus listing the bucket)."""
    import json

    actions = (["s3:GetObject", "s3:DeleteObject", "s3:PutObject", "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts"] if velero else ["s3:*"])
    statements = [{"Effect": "Allow", "Action": actions, "Resource": [f"arn:aws:s3:::{bucket}/*"]},
                  {"Effect": "Allow", "Action": ["s3:ListBucket"] if velero else ["s3:*"],
                   "Resource": [f"arn:aws:s3:::{bucket}"]}]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2) + "\n"


@dataclass(frozen=True)
class ProvisionFacts:
    buckets: frozenset[str]
    users: Mapping[str, str]     # user -> policy name
    answered: bool
    error: str


class MinioProvision:
    """Buckets, users (secret keys from the 0600 users file) and per-bucket policies, through `mc`."""

    @property
    def name(self) -> str:
        return "minio buckets, users and policies"

    def probes(self) -> Mapping[str, str]:
        return {"buckets": f"{MC_ENV}; {MC_BIN} --insecure --json ls local",
                "users": f"{MC_ENV}; {MC_BIN} --insecure --json admin user list local"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> ProvisionFacts:
        import json

        def rows(out: ProbeOutput) -> list[dict[str, str]]:
            found = []
            for line in out.stdout.splitlines():
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
            return found

        buckets = frozenset(r.get("key", "").rstrip("/") for r in rows(outputs["buckets"]) if r.get("key"))
        users = {r["accessKey"]: r.get("policyName", "") for r in rows(outputs["users"]) if r.get("accessKey")}
        answered = outputs["buckets"].ok and outputs["users"].ok
        error = "" if answered else (outputs["buckets"].stdout or outputs["users"].stdout)[-300:]
        return ProvisionFacts(buckets, users, answered, error)

    def decide(self, facts: ProvisionFacts) -> Decision:
        if not facts.answered:
            return skipped(f"minio does not answer on 127.0.0.1:9091 yet: {facts.error.strip()}")
        diff: list[str] = []
        lines = ["set -e", MC_ENV, f". {MINIO_USERS}"]
        for user, bucket in BUCKETS.items():
            if bucket not in facts.buckets:
                diff.append(f"bucket {bucket}: create")
                lines.append(f"{MC_BIN} --insecure mb --ignore-existing local/{bucket}")
            policy = f"{bucket}-rw"
            if facts.users.get(user) != policy:
                diff.append(f"user {user}: {'create, ' if user not in facts.users else ''}policy {policy}")
                var = f"MINIO_USER_{user.upper()}"
                # NOTE: the secret key goes on stdin (printf is a shell builtin): never in mc's argv
                lines += [f'printf \'%s\\n\' "${var}" | {MC_BIN} --insecure admin user add local {user}',
                          f"{MC_BIN} --insecure admin policy add local {policy} /etc/minio/{policy}.json",
                          f"{MC_BIN} --insecure admin policy set local {policy} user={user}"]
        if not diff:
            return Ok(f"buckets {', '.join(sorted(BUCKETS.values()))} and their users exist with their policies")
        return Change("\n".join(diff), [Command("\n".join(lines))])


# --- files --------------------------------------------------------------------------------------------


def minio_conf(root_password: str) -> str:
    """Minio's env file, read by systemd (EnvironmentFile) and by sh (mc's steps): every value quoted for both."""
    return env_file([("MINIO_ROOT_USER", "minioadmin"), ("MINIO_ROOT_PASSWORD", root_password),
                     ("MINIO_VOLUMES", MINIO_DATA),
                     ("MINIO_OPTS", f"--address :9091 --console-address :9092 --certs-dir {MINIO_SSL}"),
                     ("MINIO_SITE_REGION", "eu-west-1")])


def minio_users(passwords: Mapping[str, str]) -> str:
    """The bucket users' secret keys (user -> password), as sh reads them (`. users.env`)."""
    return env_file([(f"MINIO_USER_{user.upper()}", password) for user, password in passwords.items()])


def minio_unit() -> str:
    return ("[Unit]\nDescription=MinIO object storage (picluster backups)\nWants=network-online.target\n"
            "After=network-online.target\n\n[Service]\nUser=minio\nGroup=minio\n"
            f"EnvironmentFile={MINIO_CONF}\nExecStart={MINIO_BIN} server $MINIO_OPTS $MINIO_VOLUMES\n"
            "Restart=always\nLimitNOFILE=65536\n\n[Install]\nWantedBy=multi-user.target\n")


def restic_env(inv: Inventory, repo_password: str, s3_password: str) -> str:
    """restic's env file, as sh reads it (`set -a; . restic.env`): the passwords exactly as stored."""
    return env_file([("RESTIC_REPOSITORY", f"s3:https://s3.{inv.cluster.domain}:9091/restic"),
                     ("RESTIC_PASSWORD", repo_password), ("AWS_ACCESS_KEY_ID", "restic"),
                     ("AWS_SECRET_ACCESS_KEY", s3_password)])


def backup_script(inv: Inventory) -> str:
    """restic backup of /etc, /root and the admin users' homes (caches excluded), initialising the repo once."""
    users = dict.fromkeys([inv.cluster.automation_user, *(u.name for u in inv.cluster.admin_users)])
    paths = ["/etc", "/root", *(f"/home/{u}" for u in users)]
    excludes = ["/root/.cache", *(f"/home/{u}/.cache" for u in users), *(f"/home/{u}/.ansible" for u in users)]
    restic = f"{RESTIC_BIN} --cacert {RESTIC_CA}"
    return "\n".join([
        "#!/bin/sh", "# Managed by picluster (apps stage): OS backup to the Minio bucket restic.", "set -eu",
        f"set -a; . {RESTIC_ENV}; set +a",
        f"{restic} cat config >/dev/null 2>&1 || {restic} init",
        f"{restic} backup --one-file-system " + " ".join(f"--exclude {shlex.quote(e)}" for e in excludes)
        + " " + " ".join(shlex.quote(p) for p in paths), ""])


def clean_script() -> str:
    restic = f"{RESTIC_BIN} --cacert {RESTIC_CA}"
    return "\n".join(["#!/bin/sh", "# Managed by picluster (apps stage): check, forget (30 days), prune.",
                      "set -eu", f"set -a; . {RESTIC_ENV}; set +a", f"{restic} check",
                      f"{restic} forget --keep-within 30d --prune", ""])


def unit_pair(name: str, script: str, on_calendar: str, what: str) -> tuple[str, str]:
    service = (f"[Unit]\nDescription=restic {what}\nWants=network-online.target\nAfter=network-online.target\n"
               # without the binary (its download was skipped) a run is a clean systemd skip, not a failure
               f"ConditionFileIsExecutable={RESTIC_BIN}\n\n"
               # a system unit has no $HOME: restic's cache goes where systemd keeps the unit's cache
               f"[Service]\nType=oneshot\nExecStart={script}\nNice=10\nCacheDirectory=restic\n"
               "Environment=RESTIC_CACHE_DIR=/var/cache/restic\n")
    timer = (f"[Unit]\nDescription=restic {what}, daily\n\n[Timer]\nOnCalendar={on_calendar}\nPersistent=true\n"
             "RandomizedDelaySec=300\n\n[Install]\nWantedBy=timers.target\n")
    return service, timer


# --- the plan -----------------------------------------------------------------------------------------


def server_pki(inv: Inventory) -> ServerPki:
    """The Minio CA and certificate: made on first use, except in a dry run (placeholders, nothing made)."""
    from picluster.stages.apps.engine import minio_pki

    server = minio_pki(inv, create=not secrets.is_dry_run())
    return server or ServerPki(secrets.NOT_MADE, secrets.NOT_MADE, secrets.NOT_MADE)


def minio_steps(inv: Inventory, host: Host) -> list[AnyStep]:
    server = server_pki(inv)
    users = minio_users({u: secrets.ensure_secret(f"minio_{u}_password") for u in BUCKETS})
    policies: list[AnyStep] = [File(f"/etc/minio/{b}-rw.json", bucket_policy(b, velero=u == "velero"))
                               for u, b in BUCKETS.items()]
    return [
        User("minio", login_shell="/usr/sbin/nologin"),
        Batch("minio files", [
            Directory(MINIO_DATA, mode=0o750, owner="minio", group="minio"),
            Directory("/etc/minio", mode=0o750, owner="root", group="minio"),
            Directory(MINIO_SSL, mode=0o750, owner="minio", group="minio"),
            File(f"{MINIO_SSL}/public.crt", server.cert_pem, owner="minio", group="minio"),
            File(f"{MINIO_SSL}/private.key", server.key_pem, mode=0o600, owner="minio", group="minio", secret=True),
            File(MINIO_CONF, minio_conf(secrets.ensure_secret("minio_root_password")), mode=0o640,
                 group="minio", secret=True),
            File(MINIO_USERS, users, mode=0o600, secret=True),
            *policies,
            File(MINIO_UNIT, minio_unit()),
        ]),
        Apt(["curl", "ca-certificates"]),
        VendorBinary(binary("minio"), MINIO_BIN),
        VendorBinary(binary("mc"), MC_BIN),
        OnlyIf(Service("minio", enabled=True, running=True,
                       restart_on=[MINIO_CONF, MINIO_UNIT, f"{MINIO_SSL}/public.crt", f"{MINIO_SSL}/private.key",
                                   MINIO_BIN]),
               HAS_MINIO, NO_MINIO),
        OnlyIf(MinioProvision(), HAS_MINIO, NO_MINIO),
    ]


def restic_steps(inv: Inventory, host: Host) -> list[AnyStep]:
    server = server_pki(inv)
    env = restic_env(inv, secrets.ensure_secret("restic_repository_password"),
                     secrets.ensure_secret("minio_restic_password"))
    backup_service, backup_timer = unit_pair("backup", RESTIC_BACKUP, "*-*-* 03:00:00", "backup of this host")
    files: list[AnyStep] = [
        Directory(RESTIC_DIR, mode=0o700),
        File(RESTIC_CA, server.ca_pem),
        File(RESTIC_ENV, env, mode=0o600, secret=True),
        File(RESTIC_BACKUP, backup_script(inv), mode=0o700),
        File(f"{UNITS}/restic-backup.service", backup_service),
        File(f"{UNITS}/restic-backup.timer", backup_timer),
    ]
    timers: list[AnyStep] = [Service("restic-backup.timer", enabled=True, running=True,
                                     restart_on=[f"{UNITS}/restic-backup.timer"])]
    if host.role == "gateway":   # the repository maintenance takes an exclusive lock: one host does it
        clean_service, clean_timer = unit_pair("clean", RESTIC_CLEAN, "*-*-* 06:00:00", "repository maintenance")
        files += [File(RESTIC_CLEAN, clean_script(), mode=0o700),
                  File(f"{UNITS}/restic-clean.service", clean_service),
                  File(f"{UNITS}/restic-clean.timer", clean_timer)]
        timers.append(Service("restic-clean.timer", enabled=True, running=True,
                              restart_on=[f"{UNITS}/restic-clean.timer"]))
    return [Apt(["curl", "ca-certificates", "bzip2"]), VendorBinary(binary("restic"), RESTIC_BIN, "version"),
            Batch("restic files", files), *timers]


def host_steps(inv: Inventory, host: Host) -> list[AnyStep]:
    """The bare-metal backup steps of one host: Minio where `s3` points, restic everywhere."""
    if "s3" not in inv.cluster.services:
        return [NotConfigured("minio and restic", "cluster.services has no 's3': no backup server configured")]
    steps: list[AnyStep] = []
    minio = minio_host(inv)
    if minio is not None and host.name == minio.name:
        steps += minio_steps(inv, host)
    return [*steps, *restic_steps(inv, host)]


def prepare(inv: Inventory) -> None:
    """Make the controller-side material once, before hosts are planned in parallel: the CA and Minio's
    certificate, and the secrets the hosts' files hold (otherwise two hosts' threads could each make one)."""
    if "s3" not in inv.cluster.services:
        return
    server_pki(inv)
    for name in ["minio_root_password", "restic_repository_password", *(f"minio_{u}_password" for u in BUCKETS)]:
        secrets.ensure_secret(name)


def plan(inv: Inventory) -> Callable[[Host], Sequence[AnyStep]]:
    """The planner `cluster.up` and `apps.apply` give the runner (the shared material is made first)."""
    prepare(inv)
    return lambda host: host_steps(inv, host)

"""Pods of rendered manifests started as Docker containers, as the kubelet would start them.

The container tests run the charts' pods (and the operator's) on the harness's Docker engine
with only the image replaced. Everything else comes from the rendered pod template:

- command and args (`command` replaces the image's entrypoint, `args` its CMD);
- the environment as the kubelet resolves it: plain values, the downward API's pod name,
  namespace and labels (a StatefulSet pod's `apps.kubernetes.io/pod-index`), ConfigMap and
  Secret keys of the same manifests;
- ConfigMap and Secret volumes as read-only files where the container mounts them (one key
  at a `subPath`), with the volume's defaultMode;
- emptyDir as tmpfs (its sizeLimit as the size), fresh in every container;
- each volumeClaimTemplate as a labelled named volume per pod, kept across the pod's
  containers (a restart keeps its data) and handed over as a fresh PersistentVolume is: empty
  (nothing copied from the image) and, with an fsGroup, owned by that group, group-writable
  and setgid;
- the security context (uid:gid, fsGroup as a supplementary group, read-only root, no
  privilege escalation, dropped capabilities) and the memory limit;
- Kubernetes DNS, played by network aliases on a user-defined network: a StatefulSet pod's
  `<pod>.<governing service>.<namespace>.svc.cluster.local`, and on every pod a Service
  selects `<service>.<namespace>.svc[.cluster.local]` (Docker answers with every container
  holding an alias, as a Service spreads over its pods).

Probes run as the kubelet runs them: exec probes in the container, tcpSocket and httpGet
against the pod's address from inside its network namespace with the image's bash
(`/dev/tcp`), which every image here (all Debian-based) has. The test process itself reaches
a pod only through ports published on 127.0.0.1.

Not played: scheduling, CPU, init containers, restarts by the kubelet (a test starts a pod's
container again itself), and a Deployment pod's random name suffix (its ordinal here).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from energy_harness.localstack.docker import LABEL, DockerEngine

CLUSTER_DOMAIN = "cluster.local"
# The kinds whose pod template is started here, and where each keeps it.
TEMPLATE_PATHS = {
    "StatefulSet": ("spec", "template"),
    "Deployment": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
_LABEL_FIELD = re.compile(r"metadata\.labels\['([^']+)'\]")


def properties(text: str) -> dict[str, str]:
    """A Java properties file's `key=value` lines (a chart's server.properties)."""
    pairs = (
        line.split("=", 1)
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def _quantity(value: str) -> str:
    """A Kubernetes quantity as Docker's size options read it ("16Mi" -> "16m")."""
    for suffix, unit in (("Ki", "k"), ("Mi", "m"), ("Gi", "g")):
        if value.endswith(suffix):
            return value[: -len(suffix)] + unit
    return value


@dataclass(frozen=True)
class Manifests:
    """Rendered manifests (`helm template`, the operator's render) as plain dicts."""

    docs: tuple[dict[str, Any], ...]

    @classmethod
    def parse(cls, text: str) -> Manifests:
        return cls(tuple(doc for doc in yaml.safe_load_all(text) if doc))

    def __add__(self, other: Manifests) -> Manifests:
        return Manifests(self.docs + other.docs)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def find(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [doc for doc in self.of_kind(kind) if name in (None, doc["metadata"]["name"])]
        assert len(found) == 1, f"{len(found)} {kind} {name or ''} rendered"
        return found[0]

    def config_map(self, name: str | None = None) -> dict[str, str]:
        return {key: str(value) for key, value in self.find("ConfigMap", name)["data"].items()}

    def secret(self, name: str | None = None) -> dict[str, str]:
        doc = self.find("Secret", name)
        data = {
            key: base64.b64decode(value).decode() for key, value in (doc.get("data") or {}).items()
        }
        return {**data, **{key: str(value) for key, value in (doc.get("stringData") or {}).items()}}

    def workload(self, name: str | None = None, kind: str | None = None) -> Workload:
        """The one StatefulSet, Deployment or CronJob (of that name, of that kind) whose pods
        to start."""
        found = [
            doc
            for doc in self.docs
            if doc["kind"] in TEMPLATE_PATHS and kind in (None, doc["kind"])
            and name in (None, doc["metadata"]["name"])
        ]
        assert len(found) == 1, f"{len(found)} workloads {kind or ''} {name or ''} rendered"
        return Workload(self, found[0])


@dataclass(frozen=True)
class Workload:
    """A StatefulSet, Deployment or CronJob of `manifests` (which hold what it refers to)."""

    manifests: Manifests
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.doc["metadata"].get("namespace", "default"))

    @property
    def template(self) -> dict[str, Any]:
        node: Any = self.doc
        for key in TEMPLATE_PATHS[self.kind]:
            node = node[key]
        return dict(node)

    @property
    def spec(self) -> dict[str, Any]:
        """The pod spec."""
        return dict(self.template["spec"])

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.spec["containers"]
        return dict(container)

    @property
    def claims(self) -> tuple[str, ...]:
        templates = self.doc["spec"].get("volumeClaimTemplates", [])
        return tuple(claim["metadata"]["name"] for claim in templates)

    @property
    def replicas(self) -> int:
        return int(self.doc["spec"].get("replicas", 1))

    @property
    def grace_seconds(self) -> int:
        return int(self.spec.get("terminationGracePeriodSeconds", 30))

    def port(self, name: str | int) -> int:
        """A container port by name (a number stays itself), as probes and Services name it."""
        if isinstance(name, int):
            return name
        return next(int(p["containerPort"]) for p in self.container["ports"] if p["name"] == name)

    def services(self, pod_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The Services of the manifests whose selector picks a pod with these labels."""
        return [
            service
            for service in self.manifests.of_kind("Service")
            if service["spec"].get("selector")
            and service["metadata"].get("namespace", "default") == self.namespace
            and service["spec"]["selector"].items() <= pod_labels.items()
        ]

    def service_address(self) -> tuple[str, int]:
        """The Service clients use (the one selecting these pods that is not headless): its
        DNS name `<service>.<namespace>.svc` and first port."""
        labels = self.pod(0).labels
        (service,) = [s for s in self.services(labels) if s["spec"].get("clusterIP") != "None"]
        name = f"{service['metadata']['name']}.{self.namespace}.svc"
        return name, int(service["spec"]["ports"][0]["port"])

    def pod(self, index: int = 0) -> Pod:
        return Pod(self, index)

    @property
    def pods(self) -> list[Pod]:
        return [self.pod(index) for index in range(self.replicas)]


@dataclass(frozen=True)
class Pod:
    """One pod of a workload: its name, labels, DNS names and resolved environment."""

    workload: Workload
    index: int

    @property
    def name(self) -> str:
        return f"{self.workload.name}-{self.index}"

    @property
    def labels(self) -> dict[str, str]:
        labels = dict(self.workload.template["metadata"].get("labels", {}))
        if self.workload.kind == "StatefulSet":  # what the StatefulSet controller adds
            labels["statefulset.kubernetes.io/pod-name"] = self.name
            labels["apps.kubernetes.io/pod-index"] = str(self.index)
        return labels

    @property
    def fqdn(self) -> str | None:
        """A StatefulSet pod's stable DNS name through its governing Service."""
        if self.workload.kind != "StatefulSet":
            return None
        service = self.workload.doc["spec"]["serviceName"]
        return f"{self.name}.{service}.{self.workload.namespace}.svc.{CLUSTER_DOMAIN}"

    @property
    def aliases(self) -> list[str]:
        names = [self.fqdn] if self.fqdn else []
        for service in self.workload.services(self.labels):
            short = f"{service['metadata']['name']}.{self.workload.namespace}.svc"
            names += [short, f"{short}.{CLUSTER_DOMAIN}"]
        return names

    @property
    def env(self) -> dict[str, str]:
        """The container's environment as the kubelet resolves it for this pod."""
        manifests = self.workload.manifests
        env: dict[str, str] = {}
        for item in self.workload.container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                env[item["name"]] = self._field(source["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[item["name"]] = manifests.config_map(ref["name"])[ref["key"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = manifests.secret(ref["name"])[ref["key"]]
            else:
                raise AssertionError(f"no stand-in for the env source {source}")
        return env

    def _field(self, path: str) -> str:
        if path == "metadata.name":
            return self.name
        if path == "metadata.namespace":
            return self.workload.namespace
        label = _LABEL_FIELD.fullmatch(path)
        if label:
            return self.labels[label[1]]
        raise AssertionError(f"no stand-in for the downward API field {path}")

    @property
    def user(self) -> tuple[int | None, int | None]:
        """runAsUser and runAsGroup, the container's over the pod's."""
        pod, container = self.workload.spec.get("securityContext", {}), self.workload.container
        own = container.get("securityContext", {})
        uid = own.get("runAsUser", pod.get("runAsUser"))
        gid = own.get("runAsGroup", pod.get("runAsGroup"))
        if own.get("runAsNonRoot", pod.get("runAsNonRoot")):
            # The kubelet would check the image's user; here the manifest must name one.
            assert uid not in (None, 0), f"{self.name}: runAsNonRoot without a non-zero uid"
        return uid, gid


def run_args(
    pod: Pod,
    image: str,
    *,
    name: str,
    network: str | None,
    claims: Mapping[str, str],
    files: Mapping[str, Path],
    publish: Sequence[str | int] = (),
    command: Sequence[str] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> list[str]:
    """`docker run` options, image and command starting `pod` with `image` in its place.

    `claims`: claim name -> Docker volume; `files`: ConfigMap/Secret volume name -> a host
    directory holding its keys; `publish`: container ports (names or numbers) published on
    127.0.0.1; `command`: instead of the container's command and args (a one-shot in the
    pod's place); `extra_env`: over the resolved environment.
    """
    spec, container = pod.workload.spec, pod.workload.container
    args = ["--name", name, "--label", LABEL, "--hostname", pod.name]
    if network:
        args += ["--network", network]
        for alias in pod.aliases:
            args += ["--network-alias", alias]
    for key, value in {**pod.env, **(extra_env or {})}.items():
        args += ["--env", f"{key}={value}"]
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        path = mount["mountPath"]
        if mount["name"] in claims:
            volume_name = claims[mount["name"]]
            args += ["--mount", f"type=volume,src={volume_name},dst={path},volume-nocopy"]
            continue
        volume = volumes.get(mount["name"])
        if volume is None:
            raise AssertionError(f"{pod.name}: mount {mount['name']} has no volume or claim")
        if "configMap" in volume or "secret" in volume:
            # ConfigMap and Secret volumes are read-only whatever the mount says.
            source = files[mount["name"]] / mount.get("subPath", "")
            args += ["--mount", f"type=bind,src={source},dst={path},readonly"]
        elif "emptyDir" in volume:
            size = (volume["emptyDir"] or {}).get("sizeLimit")
            args += ["--tmpfs", f"{path}:size={_quantity(size)}" if size else path]
        else:
            raise AssertionError(f"no stand-in for the volume {volume}")
    uid, gid = pod.user
    if uid is not None:
        args += ["--user", str(uid) if gid is None else f"{uid}:{gid}"]
    pod_security, security = spec.get("securityContext", {}), container.get("securityContext", {})
    if "fsGroup" in pod_security:
        args += ["--group-add", str(pod_security["fsGroup"])]
    for group in pod_security.get("supplementalGroups", []):
        args += ["--group-add", str(group)]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for capability in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", capability]
    for capability in security.get("capabilities", {}).get("add", []):
        args += ["--cap-add", capability]
    memory = container.get("resources", {}).get("limits", {}).get("memory")
    if memory:
        args += ["--memory", _quantity(memory)]
    for port in publish:
        args += ["--publish", f"127.0.0.1::{pod.workload.port(port)}"]
    if command is None:
        argv = [*container.get("command", []), *container.get("args", [])]
    else:
        argv = [*command]
    if command is not None or "command" in container:
        return [*args, "--entrypoint", argv[0], image, *argv[1:]]
    return [*args, image, *argv]  # the image's entrypoint, with args as its CMD


@dataclass
class Container:
    """One container playing a pod, from `docker run` until removed."""

    engine: DockerEngine
    pod: Pod
    name: str
    started: float  # time.monotonic() at `docker run`

    def inspect(self) -> dict[str, Any]:
        return dict(json.loads(self.engine.run(["inspect", self.name]).stdout)[0])

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    @property
    def ip(self) -> str:
        """The pod's address (on its first network), where the kubelet sends probes."""
        networks = self.inspect()["NetworkSettings"]["Networks"]
        return str(next(iter(networks.values()))["IPAddress"])

    def logs(self) -> str:
        result = self.engine.run(["logs", self.name], check=False, timeout=30)
        return result.stdout + result.stderr

    def exec(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return self.engine.run(["exec", self.name, *argv], check=check, timeout=timeout)

    def address(self, port: str | int) -> tuple[str, int]:
        """Where the test process reaches a published container port: 127.0.0.1 and a port."""
        out = self.engine.run(["port", self.name, f"{self.pod.workload.port(port)}/tcp"]).stdout
        host, _, number = out.splitlines()[0].rpartition(":")
        assert host == "127.0.0.1", out
        return host, int(number)

    def probe(self, kind: str) -> bool:
        """One run of the container's `kind` probe (startupProbe, readinessProbe, ...)."""
        probe = self.pod.workload.container[kind]
        seconds = int(probe.get("timeoutSeconds", 1))
        if "exec" in probe:
            argv = list(probe["exec"]["command"])
        else:
            action = probe.get("tcpSocket") or probe["httpGet"]
            assert action.get("scheme", "HTTP") == "HTTP", f"no stand-in for {action}"
            port = self.pod.workload.port(action["port"])
            script = f"exec 3<>/dev/tcp/{self.ip}/{port}"
            if "httpGet" in probe:
                # Success as the kubelet counts it: a status from 200 to 399.
                request = f"GET {action['path']} HTTP/1.0\\r\\nHost: {self.ip}:{port}\\r\\n\\r\\n"
                # The whole answer is read: a reset mid-answer would be logged by the server.
                script += (
                    f" && printf '{request}' >&3 && {{ read -r _ code _; cat >/dev/null; }} <&3"
                    ' && [ "$code" -ge 200 ] && [ "$code" -lt 400 ]'
                )
            argv = ["timeout", str(seconds), "bash", "-c", script]
        return self.exec(*argv, check=False, timeout=seconds + 30).returncode == 0

    def wait_for_probe(self, kind: str, timeout: float) -> float:
        """`kind` probed every half second until it passes; the seconds since `docker run`.

        A startup probe also gets no longer than its own failure budget. Fails at once, with
        the log's tail, when the container exits.
        """
        probe = self.pod.workload.container[kind]
        if kind == "startupProbe":
            budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
            timeout = min(timeout, budget)
        deadline = time.monotonic() + timeout
        while not self.probe(kind):
            if not self.running():
                raise AssertionError(f"{self.name} exited:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: {kind} still failing after {timeout:.0f}s:\n"
                    f"{self.logs()[-4000:]}"
                )
            time.sleep(0.5)
        return time.monotonic() - self.started

    def wait_ready(self, timeout: float) -> float:
        """The startup probe, then the readiness probe (those it has); seconds to ready."""
        waited = 0.0
        for kind in ("startupProbe", "readinessProbe"):
            if kind in self.pod.workload.container:
                waited = self.wait_for_probe(kind, timeout)
        return waited

    def stop(self) -> int:
        """As the kubelet stops a pod: the stop signal, the grace period, then SIGKILL; the
        exit code."""
        grace = self.pod.workload.grace_seconds
        self.engine.run(["stop", "-t", str(grace), self.name], timeout=grace + 30)
        return int(self.inspect()["State"]["ExitCode"])

    def remove(self) -> None:
        self.engine.run(["rm", "-f", "-v", self.name], timeout=60)


@dataclass
class PodRunner:
    """Starts pods as containers on one engine; `cleanup()` removes every container and
    volume it made."""

    engine: DockerEngine
    workdir: Path  # the ConfigMap and Secret files, one directory per container
    network: str | None = None  # None: Docker's default bridge (no DNS aliases)
    containers: list[Container] = field(default_factory=list)
    one_shots: list[str] = field(default_factory=list)  # removed by --rm, unless cut short
    volumes: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def claim(self, pod: Pod, claim: str, image: str) -> str:
        """The Docker volume bound to `pod`'s claim: made on first use, as a fresh
        PersistentVolume reaches a pod with an fsGroup (empty, the group's, setgid)."""
        key = (pod.workload.namespace, pod.name, claim)
        if key not in self.volumes:
            volume = f"energy-{claim}-{pod.name}-{uuid.uuid4().hex[:8]}"
            self.engine.run(["volume", "create", "--label", LABEL, volume])
            self.volumes[key] = volume
            fs_group = pod.workload.spec.get("securityContext", {}).get("fsGroup")
            if fs_group is not None:
                prepare = f"chgrp {int(fs_group)} /volume && chmod 2775 /volume"
                args = ["run", "--rm", "--label", LABEL, "--user", "0:0", "--network", "none"]
                args += ["--mount", f"type=volume,src={volume},dst=/volume,volume-nocopy"]
                self.engine.run([*args, "--entrypoint", "sh", image, "-c", prepare], timeout=60)
        return self.volumes[key]

    def lose_claims(self, pod: Pod) -> None:
        """Delete the volumes of `pod`'s claims, as a lost disk (a new claim after a node
        failure): its next start gets new, empty ones. No container may still use them."""
        for key in [key for key in self.volumes if key[:2] == (pod.workload.namespace, pod.name)]:
            self.engine.run(["volume", "rm", self.volumes.pop(key)])

    def files(self, pod: Pod) -> dict[str, Path]:
        """Each ConfigMap and Secret volume of the pod as a fresh directory of its keys."""
        root = self.workdir / f"{pod.name}-{uuid.uuid4().hex[:8]}"
        dirs: dict[str, Path] = {}
        manifests = pod.workload.manifests
        for volume in pod.workload.spec.get("volumes", []):
            if "configMap" in volume:
                source = volume["configMap"]
                data = manifests.config_map(source["name"])
            elif "secret" in volume:
                source = volume["secret"]
                data = manifests.secret(source["secretName"])
            else:
                continue
            target = root / volume["name"]
            target.mkdir(parents=True, mode=0o755)
            target.chmod(0o755)  # readable by the container's uid, like the kubelet's
            for key, text in data.items():
                (target / key).write_text(text)
                (target / key).chmod(source.get("defaultMode", 0o644))
            dirs[volume["name"]] = target
        return dirs

    def _args(self, pod: Pod, image: str, name: str, **options: Any) -> list[str]:
        claims = {claim: self.claim(pod, claim, image) for claim in pod.workload.claims}
        files = self.files(pod)
        return run_args(pod, image, name=name, network=self.network, claims=claims, files=files,
                        **options)

    def start(
        self,
        pod: Pod,
        image: str,
        *,
        publish: Sequence[str | int] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> Container:
        """A new container playing `pod` (detached; see Container.wait_ready)."""
        name = f"{pod.name}-{uuid.uuid4().hex[:8]}"
        args = self._args(pod, image, name, publish=publish, extra_env=extra_env)
        container = Container(self.engine, pod, name, time.monotonic())
        self.containers.append(container)
        self.engine.run(["run", "-d", *args], timeout=120)
        return container

    def run_once(
        self,
        pod: Pod,
        image: str,
        command: Sequence[str],
        *,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = 300,
    ) -> str:
        """`command` to its end in a container set up as `pod`'s; its standard output (a
        failure raises with the output's tail)."""
        name = f"{pod.name}-once-{uuid.uuid4().hex[:8]}"
        args = self._args(pod, image, name, command=command, extra_env=extra_env)
        self.one_shots.append(name)
        return self.engine.run(["run", "--rm", *args], timeout=timeout).stdout

    def cleanup(self) -> None:
        names = [container.name for container in self.containers] + self.one_shots
        if names:
            self.engine.run(["rm", "-f", "-v", *names], check=False, timeout=120)
        if self.volumes:
            self.engine.run(["volume", "rm", "-f", *self.volumes.values()], check=False)

"""energy_harness.chart_containers: a rendered pod template to `docker run` arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
from energy_harness.chart_containers import Manifests, properties, run_args
from energy_harness.localstack.docker import LABEL

pytestmark = pytest.mark.unit

RENDERED = """
apiVersion: v1
kind: ConfigMap
metadata: {name: db-config, namespace: ns}
data: {conf.ini: "a=1", id: cluster-7}
---
apiVersion: v1
kind: Secret
metadata: {name: db-secret, namespace: ns}
data: {password: czNjcmV0}  # s3cret
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: ns}
spec:
  selector: {app: db}
  ports: [{name: sql, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: db-hl, namespace: ns}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: sql, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: ns}
spec:
  selector: {app: other}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: ns}
spec:
  replicas: 2
  serviceName: db-hl
  template:
    metadata:
      labels: {app: db}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 999, runAsGroup: 0, fsGroup: 999}
      terminationGracePeriodSeconds: 60
      containers:
        - name: db
          image: official/db:1
          args: ["-c", "x=1"]
          env:
            - {name: PLAIN, value: "v"}
            - name: POD
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            - name: INDEX
              valueFrom: {fieldRef: {fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"}}
            - name: CLUSTER
              valueFrom: {configMapKeyRef: {name: db-config, key: id}}
            - name: PASSWORD
              valueFrom: {secretKeyRef: {name: db-secret, key: password}}
          ports: [{name: sql, containerPort: 5432}]
          resources: {limits: {memory: 1Gi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: data, mountPath: /data}
            - {name: config, mountPath: /etc/db/conf.ini, subPath: conf.ini}
            - {name: run, mountPath: /run/db}
            - {name: tmp, mountPath: /tmp}
      volumes:
        - {name: config, configMap: {name: db-config}}
        - {name: run, emptyDir: {medium: Memory, sizeLimit: 16Mi}}
        - {name: tmp, emptyDir: {}}
  volumeClaimTemplates:
    - metadata: {name: data}
"""


def test_a_statefulset_pod_becomes_the_docker_run_the_kubelet_would_make() -> None:
    manifests = Manifests.parse(RENDERED)
    statefulset = manifests.workload()
    pod = statefulset.pod(1)
    assert (pod.name, pod.fqdn) == ("db-1", "db-1.db-hl.ns.svc.cluster.local")
    assert pod.env == {"PLAIN": "v", "POD": "db-1", "INDEX": "1", "CLUSTER": "cluster-7",
                       "PASSWORD": "s3cret"}  # fmt: skip
    assert statefulset.service_address() == ("db.ns.svc", 5432)
    assert [p.name for p in statefulset.pods] == ["db-0", "db-1"]
    assert statefulset.grace_seconds == 60

    args = run_args(
        pod, "stand-in/db:1", name="c1", network="net",
        claims={"data": "vol-data"}, files={"config": Path("/files/config")}, publish=["sql"],
    )  # fmt: skip
    assert args == [
        "--name", "c1", "--label", LABEL, "--hostname", "db-1",
        "--network", "net",
        "--network-alias", "db-1.db-hl.ns.svc.cluster.local",
        "--network-alias", "db.ns.svc", "--network-alias", "db.ns.svc.cluster.local",
        "--network-alias", "db-hl.ns.svc", "--network-alias", "db-hl.ns.svc.cluster.local",
        "--env", "PLAIN=v", "--env", "POD=db-1", "--env", "INDEX=1",
        "--env", "CLUSTER=cluster-7", "--env", "PASSWORD=s3cret",
        "--mount", "type=volume,src=vol-data,dst=/data,volume-nocopy",
        "--mount", "type=bind,src=/files/config/conf.ini,dst=/etc/db/conf.ini,readonly",
        "--tmpfs", "/run/db:size=16m",
        "--tmpfs", "/tmp",
        "--user", "999:0", "--group-add", "999",
        "--read-only", "--security-opt", "no-new-privileges", "--cap-drop", "ALL",
        "--memory", "1g",
        "--publish", "127.0.0.1::5432",
        "stand-in/db:1", "-c", "x=1",  # no command: the image's entrypoint, args as its CMD
    ]  # fmt: skip


def test_a_command_replaces_the_entrypoint_and_a_one_shot_its_command() -> None:
    manifests = Manifests.parse(RENDERED)
    statefulset = manifests.workload()
    statefulset.doc["spec"]["template"]["spec"]["containers"][0]["command"] = ["/bin/sh", "s.sh"]
    pod = statefulset.pod(0)
    options = {"name": "c", "network": None, "claims": {"data": "v"},
               "files": {"config": Path("/f")}}  # fmt: skip
    args = run_args(pod, "img", **options)
    assert "--network-alias" not in args  # Docker's default bridge has no DNS
    assert args[-6:] == ["--entrypoint", "/bin/sh", "img", "s.sh", "-c", "x=1"]
    once = run_args(pod, "img", command=["tool", "go"], extra_env={"PLAIN": "w"}, **options)
    assert once[-4:] == ["--entrypoint", "tool", "img", "go"]
    assert "PLAIN=w" in once and "PLAIN=v" not in once


def test_what_has_no_stand_in_is_refused() -> None:
    manifests = Manifests.parse(RENDERED)
    spec = manifests.workload().doc["spec"]["template"]["spec"]
    spec["containers"][0]["env"].append(
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    )
    with pytest.raises(AssertionError, match=r"downward API field spec\.nodeName"):
        _ = manifests.workload().pod(0).env
    spec["securityContext"]["runAsUser"] = 0
    with pytest.raises(AssertionError, match="runAsNonRoot without a non-zero uid"):
        _ = manifests.workload().pod(0).user


def test_properties_reads_key_value_lines() -> None:
    assert properties("# c\na = 1\nb=x=y\n\nnot a pair\n") == {"a": "1", "b": "x=y"}

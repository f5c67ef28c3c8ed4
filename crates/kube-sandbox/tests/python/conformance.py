"""The official Python `kubernetes` client against a cluster: create, get, list, watch, logs
and exec, the way a program using that client writes them.

Objects are built without `api_version`/`kind` on purpose: programs commonly write
`client.V1Pod(metadata=..., spec=...)`, the client then sends neither field, and the API
server must take them from the URL.

Usage: conformance.py KUBECONFIG NAMESPACE
Prints one `step: ...` line per step passed and exits 0, or exits 1 naming the step that failed.
Run by the Rust test `python_client` in tests/it (which provides the cluster).
"""

import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

# Long enough for a loaded 2-core CI machine, short enough to fail a hung step.
STEP_TIMEOUT = 60
LOG_LINE = "hello-from-python"


def step(name, detail=""):
    print(f"step: {name} {detail}".rstrip(), flush=True)


def fail(name, why):
    print(f"FAILED at {name}: {why}", file=sys.stderr, flush=True)
    sys.exit(1)


def wait_for(name, probe):
    """Calls `probe` until it returns a true value, failing the step after STEP_TIMEOUT."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            fail(name, f"not done within {STEP_TIMEOUT}s")
        time.sleep(0.2)


def create_kindless(core, ns):
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"a": "1"})
    assert cm.kind is None and cm.api_version is None
    core.create_namespaced_config_map(ns, cm)
    step("create", "namespace and configmap without apiVersion/kind")


def update_kindless(core, ns):
    cm = core.read_namespaced_config_map("settings", ns)
    replacement = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="settings", resource_version=cm.metadata.resource_version),
        data={"a": "2"},
    )
    got = core.replace_namespaced_config_map("settings", ns, replacement)
    if got.data != {"a": "2"} or got.kind != "ConfigMap":
        fail("replace", f"unexpected answer {got.kind} {got.data}")
    step("replace", "configmap without apiVersion/kind")


def wrong_kind_refused(core, ns):
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-a-pod"}}
    try:
        core.create_namespaced_pod(ns, body)
    except ApiException as e:
        if e.status != 400:
            fail("wrong kind", f"status {e.status}, expected 400: {e.body}")
        step("wrong kind", "refused with 400")
        return
    fail("wrong kind", "a Secret was accepted at the pods endpoint")


def pod_spec():
    return client.V1PodSpec(
        restart_policy="Never",
        containers=[
            client.V1Container(
                name="main",
                image="busybox:1.36",
                command=["sh", "-c", f"echo {LOG_LINE}; exec sleep 3600"],
            )
        ],
    )


def create_pod_and_watch(core, ns):
    start_rv = core.list_namespaced_pod(ns).metadata.resource_version
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="py", labels={"app": "py"}), spec=pod_spec())
    assert pod.kind is None and pod.api_version is None
    created = core.create_namespaced_pod(ns, pod)
    if created.kind != "Pod" or created.api_version != "v1":
        fail("create pod", f"answer typed {created.api_version}/{created.kind}")
    step("create", "pod without apiVersion/kind")

    events = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_pod,
        ns,
        resource_version=start_rv,
        timeout_seconds=STEP_TIMEOUT,
    ):
        obj = event["object"]
        events.append(event["type"])
        if obj.metadata.name == "py" and obj.status and obj.status.phase == "Running":
            w.stop()
    if "ADDED" not in events:
        fail("watch", f"no ADDED event (saw {events})")
    if events[-1] != "MODIFIED":
        fail("watch", f"the pod never reached Running (saw {events})")
    step("watch", " ".join(events))


def get_and_list(core, ns):
    pod = core.read_namespaced_pod("py", ns)
    if pod.metadata.labels.get("app") != "py" or pod.status.phase != "Running":
        fail("get", f"labels {pod.metadata.labels}, phase {pod.status.phase}")
    step("get", pod.status.phase)
    listed = core.list_namespaced_pod(ns, label_selector="app=py")
    names = [p.metadata.name for p in listed.items]
    if names != ["py"] or listed.kind != "PodList":
        fail("list", f"{listed.kind} {names}")
    none = core.list_namespaced_pod(ns, label_selector="app=other")
    if none.items:
        fail("list", "a selector matching nothing returned pods")
    step("list", " ".join(names))


def logs(core, ns):
    text = wait_for("logs", lambda: core.read_namespaced_pod_log("py", ns, container="main"))
    if LOG_LINE not in text:
        fail("logs", repr(text))
    step("logs", LOG_LINE)


def exec_collected(core, ns):
    out = stream(
        core.connect_get_namespaced_pod_exec,
        "py",
        ns,
        command=["sh", "-c", "echo from-exec; cat /etc/hostname >/dev/null"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    if "from-exec" not in out:
        fail("exec", repr(out))
    step("exec", "output collected")


def exec_streams(core, ns):
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        "py",
        ns,
        command=["sh", "-c", "cat; echo to-stderr >&2; exit 3"],
        stderr=True,
        stdin=True,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    resp.write_stdin("through-stdin\n")
    # v5 closes stdin so `cat` ends; v4 cannot, so end it there with the connection.
    resp.close_channel(0)
    out, err = "", ""
    deadline = time.monotonic() + STEP_TIMEOUT
    while resp.is_open() and time.monotonic() < deadline:
        resp.update(timeout=1)
        out += resp.read_stdout(timeout=0) or ""
        err += resp.read_stderr(timeout=0) or ""
    if resp.is_open():
        fail("exec streams", f"not finished within {STEP_TIMEOUT}s (subprotocol {resp.subprotocol})")
    if out != "through-stdin\n" or err != "to-stderr\n" or resp.returncode != 3:
        fail("exec streams", f"stdout {out!r} stderr {err!r} exit {resp.returncode}")
    step("exec", f"stdin, stdout, stderr and exit code over {resp.subprotocol}")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    config.load_kube_config(config_file=sys.argv[1])
    core = client.CoreV1Api()
    ns = sys.argv[2]
    create_kindless(core, ns)
    update_kindless(core, ns)
    wrong_kind_refused(core, ns)
    create_pod_and_watch(core, ns)
    get_and_list(core, ns)
    logs(core, ns)
    exec_collected(core, ns)
    exec_streams(core, ns)
    # The namespace stays: the caller checks the stored objects with kubectl, then removes it.
    step("done")


if __name__ == "__main__":
    main()

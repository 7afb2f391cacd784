#!/usr/bin/env python3
"""Builds an OCI image-layout archive from files of this machine, without a container engine.

    oci-image.py SPEC.json OUT.tar

SPEC names the image, its config (user, entrypoint, cmd, env, workdir) and its one layer:
  "files":    {"/image/path": "/host/path"}            copied as they are
  "binaries": {"/image/path": "/host/path"}            copied with every shared library ldd names
  "trees":    {"/image/dir": "/host/dir"}              copied recursively (symlinks kept)
  "symlinks": {"/image/path": "target"}
  "dirs":     {"/image/dir": "mode:uid:gid"}
  "text":     {"/image/path": "content"}
The archive is reproducible: entries sorted, owners and times fixed, gzip without a timestamp,
so the same inputs give the same digests, and an archive whose inputs did not change is
not written again. `ctr -n k8s.io images import OUT.tar` imports it under
the name in the index's `io.containerd.image.name` annotation. Prints the manifest digest.
"""
import gzip
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import tarfile

# Never wanted in an image: byte-code caches, test suites, GUI and installer parts of Python.
SKIPPED_DIRS = {"__pycache__", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip",
                "lib2to3", "pydoc_data", "distutils", "unittest"}
MERGED = ("/bin/", "/sbin/", "/lib/", "/lib64/")  # Debian's merged /usr: these are symlinks


def usr_path(path):
    return "/usr" + path if path.startswith(MERGED) else path


def shared_libraries(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    if "not a dynamic executable" in out or "statically linked" in out:
        return []
    libs = re.findall(r"=> (/\S+)", out) + re.findall(r"^\s*(/\S+) \(", out, re.M)
    return sorted(set(libs))


class Layer:
    def __init__(self):
        self.entries = {}  # image path -> (TarInfo, bytes or None)

    def _info(self, path, kind, mode, uid=0, gid=0):
        info = tarfile.TarInfo(path.lstrip("/"))
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, 0
        return info

    def parents(self, path):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:i])
            if parent not in self.entries:
                self.entries[parent] = (self._info(parent, tarfile.DIRTYPE, 0o755), None)

    def dir(self, path, mode=0o755, uid=0, gid=0):
        self.parents(path)
        self.entries[path] = (self._info(path, tarfile.DIRTYPE, mode, uid, gid), None)

    def data(self, path, content, mode=0o644):
        self.parents(path)
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(content)
        self.entries[path] = (info, content)

    def file(self, path, host):
        with open(host, "rb") as f:
            self.data(path, f.read(), stat.S_IMODE(os.stat(host).st_mode))

    def symlink(self, path, target):
        self.parents(path)
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.entries[path] = (info, None)

    def tree(self, path, host):
        for dirpath, dirnames, filenames in os.walk(host):
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
            rel = os.path.relpath(dirpath, host)
            base = path if rel == "." else f"{path}/{rel}"
            self.dir(base)
            for name in dirnames + filenames:
                src, dest = os.path.join(dirpath, name), f"{base}/{name}"
                if os.path.islink(src):
                    self.symlink(dest, os.readlink(src))
                elif os.path.isfile(src):
                    self.file(dest, src)

    def tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                info, content = self.entries[path]
                tar.addfile(info, io.BytesIO(content) if content is not None else None)
        return buf.getvalue()


def build_layer(spec):
    layer = Layer()
    for merged in ("bin", "sbin", "lib", "lib64"):
        layer.dir(f"/usr/{merged}")
        layer.symlink(f"/{merged}", f"usr/{merged}")
    for path, host in spec.get("binaries", {}).items():
        layer.file(path, host)
        for lib in shared_libraries(host):
            layer.file(usr_path(lib), os.path.realpath(lib))
    for path, host in spec.get("files", {}).items():
        layer.file(path, host)
    for path, host in spec.get("trees", {}).items():
        layer.tree(path, host)
    for path, content in spec.get("text", {}).items():
        layer.data(path, content.encode())
    for path, target in spec.get("symlinks", {}).items():
        layer.symlink(path, target)
    for path, owner in spec.get("dirs", {}).items():
        mode, uid, gid = owner.split(":")
        layer.dir(path, int(mode, 8), int(uid), int(gid))
    return layer.tar()


def blob(out, content):
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    out[f"blobs/sha256/{digest[7:]}"] = content
    return digest


def main(spec_path, out_path):
    with open(spec_path) as f:
        spec = json.load(f)
    layer = build_layer(spec)
    # Content-addressed: the same layer and config as last time means the same archive.
    inputs = hashlib.sha256(layer + json.dumps(spec, sort_keys=True).encode()).hexdigest()
    stamp = out_path + ".inputs"
    if os.path.exists(out_path) and os.path.exists(stamp):
        with open(stamp) as f:
            previous, digest = f.read().split()
        if previous == inputs:
            print(digest)
            return
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, filename="", compresslevel=6) as g:
        g.write(layer)
    blobs = {}
    layer_digest = blob(blobs, gz.getvalue())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            key: spec[field]
            for field, key in [("user", "User"), ("entrypoint", "Entrypoint"), ("cmd", "Cmd"),
                               ("env", "Env"), ("workdir", "WorkingDir"), ("labels", "Labels")]
            if field in spec
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/oci-image.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blob(blobs, config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": len(gz.getvalue())}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = blob(blobs, manifest_bytes)
    name = spec["name"]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest_bytes),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
        }],
    }
    files = dict(blobs)
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    files["index.json"] = json.dumps(index, sort_keys=True).encode()
    tmp = out_path + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(files[path]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[path]))
    os.replace(tmp, out_path)
    with open(stamp, "w") as f:
        f.write(f"{inputs} {manifest_digest}\n")
    print(manifest_digest)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

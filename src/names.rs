//! The names everything shares — the API group, the labels, annotations and environment
//! variables of the contract, the field managers, the token audience — at the bottom of the
//! crate, so that no layer imports a higher one to learn a name.

/// API group of every resource of the operator.
pub const GROUP: &str = "dr.titan.io";

// Labels of every Job a run creates.
pub const LABEL_RECOVERY: &str = "dr.titan.io/recovery";
pub const LABEL_RUN: &str = "dr.titan.io/run";
/// The RecoveryRun a Job (and its pod) belongs to.
pub const LABEL_RUN_NAME: &str = "dr.titan.io/run-name";
pub const LABEL_STEP: &str = "dr.titan.io/step";
pub const LABEL_KIND: &str = "dr.titan.io/kind";
pub const LABEL_ATTEMPT: &str = "dr.titan.io/attempt";
/// The UID of the resource a Job belongs to (on Backup Jobs too): a Job is its owner's only
/// when this matches, whatever its name and other labels say.
pub const LABEL_OWNER_UID: &str = "dr.titan.io/owner-uid";

/// On a Backup's Jobs and their pods: the Backup's name; their `dr.titan.io/kind` is one of
/// the two below.
pub const LABEL_BACKUP: &str = "dr.titan.io/backup";
pub const KIND_SNAPSHOT: &str = "snapshot";
pub const KIND_VERIFY: &str = "verify";

/// Label of a drill's namespace: its value is the real target namespace the drill stands
/// in for.
pub const LABEL_DRILL: &str = "dr.titan.io/drill";
/// Finalizer of a drill's RecoveryRun, held until its namespace is gone.
pub const DRILL_FINALIZER: &str = "dr.titan.io/drill-namespace";
/// Changing this annotation's value starts a new run.
pub const RUN_NOW: &str = "dr.titan.io/run-now";
/// On a Job whose pod could not start: why. The attempt is Failed with this message, whatever
/// the Job's own conditions say later.
pub const FAILED_TO_START: &str = "dr.titan.io/failed-to-start";
/// When the operator decided so (RFC 3339): the attempt's end.
pub const FAILED_TO_START_AT: &str = "dr.titan.io/failed-to-start-at";
/// The annotation by which a namespace lets Backups of other namespaces snapshot its
/// ConfigMaps and Secrets.
pub const BACKUP_NAMESPACES_ANNOTATION: &str = "dr.titan.io/backup-namespaces";
/// Keeps a cluster-autoscaler scale-down from evicting a recovery step.
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// Every attempt's environment says which attempt it is (1 for the first): a step can tell a
/// retry from its first run. Set the same way by the local executor.
pub const ATTEMPT_ENV: &str = "TITAN_ATTEMPT";
/// The namespace the scenario recovers (`spec.targetNamespace`, default the resource's own),
/// so that one runbook's commands work wherever it is pointed, a drill's namespace included.
pub const TARGET_NAMESPACE_ENV: &str = "TITAN_TARGET_NAMESPACE";
/// The env var through which a redis probe gets its password: in the cluster the probe's Job
/// sets it from `passwordSecretRef`; a local run takes it from its own environment.
pub const REDIS_PASSWORD_ENV: &str = "TITAN_REDIS_PASSWORD";

/// The field manager of every write the operator makes.
pub const OPERATOR_MANAGER: &str = "titan-dr-operator";
/// The field manager of the objects a configuration restore applies (as the restore Job's
/// own account, not the operator's).
pub const RESTORE_MANAGER: &str = "titan-dr-restore";

/// The audience of the tokens the operator's snapshot endpoint accepts: tokens made for the
/// API server are refused, and these are refused by the API server.
pub const AUDIENCE: &str = "titan-dr";

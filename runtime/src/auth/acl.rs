//! Kafka's ACL model and authorizer: bindings of (resource type, name, pattern) to (principal,
//! host, operation, allow/deny), checked as Kafka's StandardAuthorizer checks them, and kept in
//! one JSON file in the data directory (replaced durably at every change).
//!
//! The decision for (principal, host, operation, resource):
//! 1. a super user may do anything;
//! 2. a matching DENY wins over everything else;
//! 3. a matching ALLOW for the operation, or for one that implies it (READ, WRITE, DELETE and
//!    ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS; ALL implies all), allows;
//! 4. with no ACL at all on the resource, `allow_everyone_if_no_acl_found` decides (Kafka's
//!    `allow.everyone.if.no.acl.found`, default false);
//! 5. otherwise, denied.
//!
//! A binding matches a resource when its pattern is LITERAL and its name is the resource's
//! name or `*`, or PREFIXED and the resource's name starts with it; its principal is the
//! caller's or `User:*`; its host is the caller's address or `*`.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::disk::json::{self, JsonFileError};

pub const FILE: &str = "acls.json";

/// Kafka's `ResourceType` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Resource {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl Resource {
    pub const ALL: [Resource; 6] = [
        Resource::Topic,
        Resource::Group,
        Resource::Cluster,
        Resource::TransactionalId,
        Resource::DelegationToken,
        Resource::User,
    ];

    pub fn code(self) -> i8 {
        match self {
            Resource::Topic => 2,
            Resource::Group => 3,
            Resource::Cluster => 4,
            Resource::TransactionalId => 5,
            Resource::DelegationToken => 6,
            Resource::User => 7,
        }
    }

    pub fn from_code(c: i8) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.code() == c)
    }

    /// The operations that apply to this resource type (what "authorized operations" lists).
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            Resource::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                DescribeConfigs,
                AlterConfigs,
            ],
            Resource::Group => &[Read, Delete, Describe, DescribeConfigs, AlterConfigs],
            Resource::Cluster => &[
                Create,
                Alter,
                Describe,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
            ],
            Resource::TransactionalId => &[Write, Describe],
            Resource::DelegationToken => &[Describe],
            Resource::User => &[CreateTokens, DescribeTokens],
        }
    }
}

/// Kafka's `AclOperation` codes (ANY = 1 only in filters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

impl Operation {
    const CODES: [(Operation, i8); 13] = [
        (Operation::All, 2),
        (Operation::Read, 3),
        (Operation::Write, 4),
        (Operation::Create, 5),
        (Operation::Delete, 6),
        (Operation::Alter, 7),
        (Operation::Describe, 8),
        (Operation::ClusterAction, 9),
        (Operation::DescribeConfigs, 10),
        (Operation::AlterConfigs, 11),
        (Operation::IdempotentWrite, 12),
        (Operation::CreateTokens, 13),
        (Operation::DescribeTokens, 14),
    ];

    pub fn code(self) -> i8 {
        Operation::CODES
            .iter()
            .find(|(o, _)| *o == self)
            .map(|(_, c)| *c)
            .unwrap_or(0)
    }

    pub fn from_code(c: i8) -> Option<Operation> {
        Operation::CODES
            .iter()
            .find(|(_, k)| *k == c)
            .map(|(o, _)| *o)
    }

    pub fn from_name(s: &str) -> Option<Operation> {
        let norm = s.to_ascii_lowercase().replace(['_', '-'], "");
        Operation::CODES
            .iter()
            .map(|(o, _)| *o)
            .find(|o| format!("{o:?}").to_ascii_lowercase() == norm)
    }

    /// Whether an ALLOW of `self` allows `asked`.
    fn implies(self, asked: Operation) -> bool {
        use Operation::*;
        self == All
            || self == asked
            || (asked == Describe && matches!(self, Read | Write | Delete | Alter))
            || (asked == DescribeConfigs && self == AlterConfigs)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Pattern {
    Literal,
    Prefixed,
}

impl Pattern {
    pub fn code(self) -> i8 {
        match self {
            Pattern::Literal => 3,
            Pattern::Prefixed => 4,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }
}

/// One ACL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Binding {
    pub resource: Resource,
    pub name: String,
    pub pattern: Pattern,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// Why a binding cannot be created (each maps to INVALID_REQUEST with this message, as Kafka).
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindingError {
    #[error("unknown resource type {0}")]
    ResourceType(i8),
    #[error("unknown or non-specific pattern type {0}")]
    Pattern(i8),
    #[error("unknown or non-specific operation {0}")]
    Operation(i8),
    #[error("unknown or non-specific permission type {0}")]
    Permission(i8),
    #[error("principal '{0}' is not of the form TYPE:NAME")]
    Principal(String),
    #[error("the resource name must not be empty")]
    EmptyName,
    #[error("a cluster ACL's resource name must be kafka-cluster")]
    ClusterName,
}

impl Binding {
    /// A binding from the wire's codes, validated as Kafka validates CreateAcls.
    #[allow(clippy::too_many_arguments)]
    pub fn from_wire(
        resource_type: i8,
        name: &str,
        pattern: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<Binding, BindingError> {
        let resource =
            Resource::from_code(resource_type).ok_or(BindingError::ResourceType(resource_type))?;
        let pattern = match pattern {
            3 => Pattern::Literal,
            4 => Pattern::Prefixed,
            p => return Err(BindingError::Pattern(p)),
        };
        let operation =
            Operation::from_code(operation).ok_or(BindingError::Operation(operation))?;
        let permission = match permission {
            2 => Permission::Deny,
            3 => Permission::Allow,
            p => return Err(BindingError::Permission(p)),
        };
        match principal.split_once(':') {
            Some((t, n)) if !t.is_empty() && !n.is_empty() => {}
            _ => return Err(BindingError::Principal(principal.into())),
        }
        if name.is_empty() {
            return Err(BindingError::EmptyName);
        }
        if resource == Resource::Cluster && name != "kafka-cluster" {
            return Err(BindingError::ClusterName);
        }
        Ok(Binding {
            resource,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: host.into(),
            operation,
            permission,
        })
    }

    fn covers(&self, resource: Resource, name: &str) -> bool {
        self.resource == resource
            && match self.pattern {
                Pattern::Literal => self.name == name || self.name == "*",
                Pattern::Prefixed => name.starts_with(&self.name),
            }
    }

    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == "User:*")
            && (self.host == host || self.host == "*")
    }
}

/// A DescribeAcls / DeleteAcls filter. `None` fields match anything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub resource: Option<Resource>,
    pub name: Option<String>,
    /// ANY (1) and MATCH (2) are kept as codes: MATCH means "every binding that would apply to
    /// this literal name", prefixes and wildcards included.
    pub pattern: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl Filter {
    /// From the wire. `None` for a filter that can match nothing valid (an unknown code).
    #[allow(clippy::too_many_arguments)]
    pub fn from_wire(
        resource_type: i8,
        name: Option<&str>,
        pattern: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Option<Filter> {
        let resource = match resource_type {
            1 => None,
            c => Some(Resource::from_code(c)?),
        };
        if !(1..=4).contains(&pattern) {
            return None;
        }
        let operation = match operation {
            1 => None,
            c => Some(Operation::from_code(c)?),
        };
        let permission = match permission {
            1 => None,
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => return None,
        };
        Some(Filter {
            resource,
            name: name.map(str::to_string),
            pattern,
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation,
            permission,
        })
    }

    pub fn matches(&self, b: &Binding) -> bool {
        let name_ok = match (self.pattern, &self.name) {
            (1, None) => true,
            (1, Some(n)) => &b.name == n,
            (2, None) => true,
            (2, Some(n)) => match b.pattern {
                Pattern::Literal => &b.name == n || b.name == "*",
                Pattern::Prefixed => n.starts_with(&b.name),
            },
            (3, n) => b.pattern == Pattern::Literal && n.as_ref().is_none_or(|n| &b.name == n),
            (4, n) => b.pattern == Pattern::Prefixed && n.as_ref().is_none_or(|n| &b.name == n),
            _ => false,
        };
        name_ok
            && self.resource.is_none_or(|r| r == b.resource)
            && self.principal.as_ref().is_none_or(|p| p == &b.principal)
            && self.host.as_ref().is_none_or(|h| h == &b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

/// The authorizer's settings (from the broker config).
#[derive(Clone, Debug, Default)]
pub struct AclConfig {
    /// Whether ACLs are enforced (Kafka: an `authorizer.class.name` is set). Off by default:
    /// every principal may do everything, as on a Kafka broker without an authorizer.
    pub enabled: bool,
    pub allow_everyone_if_no_acl_found: bool,
}

pub struct Acls {
    path: PathBuf,
    pub config: AclConfig,
    super_users: Vec<String>,
    bindings: RwLock<Vec<Binding>>,
    write: std::sync::Mutex<()>,
}

impl Acls {
    pub fn open(
        data_dir: &Path,
        config: AclConfig,
        super_users: Vec<String>,
    ) -> Result<Acls, JsonFileError> {
        let path = data_dir.join(FILE);
        let bindings = json::load(&path)?;
        Ok(Acls {
            path,
            config,
            super_users,
            bindings: RwLock::new(bindings),
            write: std::sync::Mutex::new(()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.iter().any(|s| s == principal)
    }

    /// Whether `principal` connecting from `host` may do `op` on the resource. Always true
    /// when the authorizer is off.
    pub fn allowed(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        resource: Resource,
        name: &str,
    ) -> bool {
        if !self.config.enabled || self.is_super_user(principal) {
            return true;
        }
        let all = self.bindings.read().unwrap_or_else(|e| e.into_inner());
        let mut any_on_resource = false;
        let mut allow = false;
        for b in all.iter().filter(|b| b.covers(resource, name)) {
            any_on_resource = true;
            if !b.applies_to(principal, host) {
                continue;
            }
            match b.permission {
                // ALL denies every operation; a DESCRIBE deny does not deny READ.
                Permission::Deny if b.operation == Operation::All || b.operation == op => {
                    return false
                }
                Permission::Deny => {}
                Permission::Allow => allow |= b.operation.implies(op),
            }
        }
        allow || (!any_on_resource && self.config.allow_everyone_if_no_acl_found)
    }

    /// KIP-679: whether the principal may do `op` on some resource of this type (an idempotent
    /// producer needs IDEMPOTENT_WRITE on the cluster, or WRITE on any topic).
    pub fn allowed_on_any(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        resource: Resource,
    ) -> bool {
        if !self.config.enabled || self.is_super_user(principal) {
            return true;
        }
        // As Kafka: first a name no one would write an ACL for, which settles the case when a
        // wildcard grants it, or when no ACL covers it and everyone is allowed then.
        if self.allowed(principal, host, op, resource, "hardcode") {
            return true;
        }
        let all = self.bindings.read().unwrap_or_else(|e| e.into_inner());
        let mine = || {
            all.iter().filter(move |b| {
                b.resource == resource
                    && b.applies_to(principal, host)
                    && (b.operation == op || b.operation == Operation::All)
            })
        };
        let denies: Vec<&Binding> = mine()
            .filter(|b| b.permission == Permission::Deny)
            .collect();
        // A literal wildcard deny takes every resource of the type away.
        if denies
            .iter()
            .any(|b| b.pattern == Pattern::Literal && b.name == "*")
        {
            return false;
        }
        // An allow counts unless a deny covers everything it names: a literal deny of the
        // same literal name, or a prefixed deny of a prefix of it (which also covers every
        // name an allowed prefix could match). A deny of one topic leaves the others allowed,
        // and a literal deny leaves the rest of an allowed prefix.
        let dominated = |b: &Binding| {
            denies.iter().any(|d| match d.pattern {
                Pattern::Literal => b.pattern == Pattern::Literal && d.name == b.name,
                Pattern::Prefixed => b.name.starts_with(d.name.as_str()),
            })
        };
        mine()
            .filter(|b| b.permission == Permission::Allow)
            .any(|b| (b.pattern == Pattern::Literal && b.name == "*") || !dominated(b))
    }

    /// The authorized-operations bitfield (bit n for operation code n) for a resource.
    pub fn operations_bitfield(
        &self,
        principal: &str,
        host: &str,
        resource: Resource,
        name: &str,
    ) -> i32 {
        resource
            .operations()
            .iter()
            .filter(|op| self.allowed(principal, host, **op, resource, name))
            .fold(0, |b, op| b | (1 << op.code()))
    }

    pub fn describe(&self, filter: &Filter) -> Vec<Binding> {
        let all = self.bindings.read().unwrap_or_else(|e| e.into_inner());
        all.iter().filter(|b| filter.matches(b)).cloned().collect()
    }

    fn store(&self, next: Vec<Binding>) -> Result<(), JsonFileError> {
        json::store(&self.path, &next)?;
        *self.bindings.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    /// Adds bindings (an existing one is kept once), on disk before returning.
    pub fn create(&self, add: &[Binding]) -> Result<(), JsonFileError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self
            .bindings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for b in add {
            if !next.contains(b) {
                next.push(b.clone());
            }
        }
        self.store(next)
    }

    /// Removes every binding matching any filter; returns, per filter, what it removed.
    pub fn delete(&self, filters: &[Filter]) -> Result<Vec<Vec<Binding>>, JsonFileError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self
            .bindings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let removed: Vec<Vec<Binding>> = filters
            .iter()
            .map(|f| current.iter().filter(|b| f.matches(b)).cloned().collect())
            .collect();
        let next: Vec<Binding> = current
            .into_iter()
            .filter(|b| !filters.iter().any(|f| f.matches(b)))
            .collect();
        self.store(next)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(
        resource: Resource,
        name: &str,
        pattern: Pattern,
        principal: &str,
        op: Operation,
        permission: Permission,
    ) -> Binding {
        Binding {
            resource,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission,
        }
    }

    fn acls(dir: &Path, allow_if_none: bool) -> Acls {
        Acls::open(
            dir,
            AclConfig {
                enabled: true,
                allow_everyone_if_no_acl_found: allow_if_none,
            },
            vec!["User:root".into()],
        )
        .unwrap()
    }

    #[test]
    fn kafka_decision_rules() {
        use Operation::*;
        use Pattern::*;
        use Permission::*;
        use Resource::*;
        let dir = tempfile::tempdir().unwrap();
        let a = acls(dir.path(), false);
        a.create(&[
            b(Topic, "orders", Literal, "User:alice", Read, Allow),
            b(Topic, "logs-", Prefixed, "User:alice", Write, Allow),
            b(Topic, "logs-secret", Literal, "User:alice", All, Deny),
            b(Topic, "*", Literal, "User:*", Describe, Allow),
            b(Group, "g", Literal, "User:bob", All, Allow),
            b(Topic, "shared", Literal, "User:bob", Describe, Deny),
            b(Topic, "shared", Literal, "User:bob", Read, Allow),
        ])
        .unwrap();
        let ok = |p: &str, op, r, n: &str| a.allowed(p, "10.0.0.1", op, r, n);
        assert!(ok("User:alice", Read, Topic, "orders"));
        assert!(
            ok("User:alice", Describe, Topic, "orders"),
            "READ implies DESCRIBE"
        );
        assert!(!ok("User:alice", Write, Topic, "orders"));
        assert!(ok("User:alice", Write, Topic, "logs-app"), "prefixed");
        assert!(!ok("User:alice", Write, Topic, "logs-secret"), "deny wins");
        assert!(
            !ok("User:alice", Describe, Topic, "logs-secret"),
            "deny ALL denies DESCRIBE"
        );
        assert!(
            ok("User:carol", Describe, Topic, "anything"),
            "wildcard principal and name"
        );
        assert!(!ok("User:carol", Read, Topic, "anything"));
        assert!(ok("User:bob", Read, Group, "g") && ok("User:bob", Delete, Group, "g"));
        assert!(
            !ok("User:bob", Read, Group, "other"),
            "no ACL on the group: denied by default"
        );
        assert!(
            ok("User:bob", Read, Topic, "shared"),
            "a DESCRIBE deny does not deny READ"
        );
        assert!(!ok("User:bob", Describe, Topic, "shared"));
        assert!(
            ok("User:root", AlterConfigs, Cluster, "kafka-cluster"),
            "super user"
        );
        let open = acls(tempfile::tempdir().unwrap().path(), true);
        assert!(
            open.allowed("User:x", "h", Write, Topic, "t"),
            "allow.everyone.if.no.acl.found"
        );
        assert_eq!(
            a.operations_bitfield("User:alice", "h", Topic, "orders"),
            (1 << 3) | (1 << 8)
        );
        assert!(a.allowed_on_any("User:alice", "h", Write, Topic));
        assert!(!a.allowed_on_any("User:bob", "h", Write, Topic));
    }

    /// KIP-679's "some resource of the type" rule, as Kafka's authorizeByResourceType: an
    /// allow counts unless a deny covers all it names.
    #[test]
    fn allowed_on_any_weighs_denies_against_what_each_allow_names() {
        use Operation::*;
        use Pattern::*;
        use Permission::*;
        use Resource::*;
        let case = |bindings: &[Binding], allow_if_none: bool| {
            let dir = tempfile::tempdir().unwrap();
            let a = acls(dir.path(), allow_if_none);
            a.create(bindings).unwrap();
            a.allowed_on_any("User:u", "h", Write, Topic)
        };
        let allow = |name: &str, p| b(Topic, name, p, "User:u", Write, Allow);
        let deny = |name: &str, p| b(Topic, name, p, "User:u", Write, Deny);
        assert!(case(&[allow("a", Literal), deny("b", Literal)], false));
        assert!(
            case(
                &[allow("a", Literal), allow("b", Literal), deny("a", Literal)],
                false
            ),
            "a deny of one topic leaves the other allow"
        );
        assert!(!case(&[allow("a", Literal), deny("a", Literal)], false));
        assert!(!case(&[allow("ab", Literal), deny("a", Prefixed)], false));
        assert!(!case(&[allow("ab", Prefixed), deny("a", Prefixed)], false));
        assert!(
            case(&[allow("a", Prefixed), deny("ab", Prefixed)], false),
            "the allowed prefix still names topics outside the denied one"
        );
        assert!(!case(&[allow("*", Literal), deny("*", Literal)], false));
        assert!(case(&[allow("*", Literal), deny("a", Literal)], false));
        assert!(
            !case(&[b(Topic, "a", Literal, "User:u", Read, Allow)], false),
            "READ is not WRITE"
        );
        assert!(case(&[b(Topic, "a", Literal, "User:u", All, Allow)], false));
        assert!(
            !case(
                &[
                    allow("a", Literal),
                    b(Topic, "a", Literal, "User:u", All, Deny)
                ],
                false
            ),
            "a deny of ALL denies WRITE"
        );
        assert!(
            case(&[b(Group, "g", Literal, "User:x", Read, Allow)], true),
            "no topic ACL at all, and everyone allowed if none is found"
        );
        assert!(
            case(&[b(Topic, "t", Literal, "User:x", Write, Allow)], true),
            "ACLs of others on other topics do not matter: Kafka probes a name none covers"
        );
        assert!(
            case(&[allow("a", Prefixed), deny("a", Literal)], false),
            "a literal deny leaves the rest of an allowed prefix"
        );
    }

    #[test]
    fn filters_and_persistence() {
        use Operation::*;
        use Pattern::*;
        use Permission::*;
        use Resource::*;
        let dir = tempfile::tempdir().unwrap();
        let a = acls(dir.path(), false);
        a.create(&[
            b(Topic, "orders", Literal, "User:alice", Read, Allow),
            b(Topic, "ord", Prefixed, "User:bob", Write, Allow),
            b(Topic, "*", Literal, "User:carol", Read, Allow),
        ])
        .unwrap();
        // MATCH: everything that would apply to the literal name "orders".
        let m = Filter::from_wire(2, Some("orders"), 2, None, None, 1, 1).unwrap();
        assert_eq!(a.describe(&m).len(), 3);
        let lit = Filter::from_wire(2, Some("orders"), 3, None, None, 1, 1).unwrap();
        assert_eq!(a.describe(&lit).len(), 1);
        let removed = a
            .delete(&[Filter::from_wire(1, None, 4, None, None, 1, 1).unwrap()])
            .unwrap();
        assert_eq!(removed[0].len(), 1);
        let again = acls(dir.path(), false);
        assert_eq!(
            again
                .describe(&Filter::from_wire(1, None, 1, None, None, 1, 1).unwrap())
                .len(),
            2
        );
        assert!(Binding::from_wire(4, "other", 3, "User:a", "*", 3, 3).is_err());
        assert!(
            Binding::from_wire(2, "t", 1, "User:a", "*", 3, 3).is_err(),
            "ANY pattern"
        );
        assert!(
            Binding::from_wire(2, "t", 3, "alice", "*", 3, 3).is_err(),
            "no principal type"
        );
    }
}

//! CreateAcls, DescribeAcls, DeleteAcls (KIP-140; prefixed patterns, KIP-290). Managing
//! ACLs takes ALTER on the cluster, listing them DESCRIBE; both answer SECURITY_DISABLED while
//! the authorizer is off, as Kafka does without an authorizer.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::{Binding, Filter, Operation, Resource};

const CLUSTER: &str = "kafka-cluster";

fn refused(ctx: &Ctx, op: Operation) -> Option<ResponseError> {
    if !ctx.broker.acls.enabled() {
        Some(ResponseError::SecurityDisabled)
    } else if !ctx.allowed(op, Resource::Cluster, CLUSTER) {
        Some(ResponseError::ClusterAuthorizationFailed)
    } else {
        None
    }
}

pub fn create(ctx: &Ctx, req: CreateAclsRequest) -> CreateAclsResponse {
    let n = req.creations.len();
    if let Some(e) = refused(ctx, Operation::Alter) {
        return CreateAclsResponse::default().with_results(
            (0..n)
                .map(|_| AclCreationResult::default().with_error_code(code(e)))
                .collect(),
        );
    }
    let parsed: Vec<_> = req
        .creations
        .iter()
        .map(|c| {
            Binding::from_wire(
                c.resource_type,
                c.resource_name.as_str(),
                c.resource_pattern_type,
                c.principal.as_str(),
                c.host.as_str(),
                c.operation,
                c.permission_type,
            )
        })
        .collect();
    let valid: Vec<Binding> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let stored = ctx.broker.acls.create(&valid);
    let results = parsed
        .into_iter()
        .map(|p| match (p, &stored) {
            (Err(e), _) => AclCreationResult::default()
                .with_error_code(code(ResponseError::InvalidRequest))
                .with_error_message(Some(sb(e.to_string()))),
            (Ok(b), Ok(())) => {
                tracing::info!(principal = %ctx.principal, acl = ?b, "ACL created");
                AclCreationResult::default()
            }
            (Ok(_), Err(e)) => AclCreationResult::default()
                .with_error_code(code(ResponseError::UnknownServerError))
                .with_error_message(Some(sb(e.to_string()))),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

fn filter_of(
    resource_type: i8,
    name: Option<&str>,
    pattern: i8,
    principal: Option<&str>,
    host: Option<&str>,
    operation: i8,
    permission: i8,
) -> Result<Filter, ResponseError> {
    Filter::from_wire(
        resource_type,
        name,
        pattern,
        principal,
        host,
        operation,
        permission,
    )
    .ok_or(ResponseError::InvalidRequest)
}

pub fn describe(ctx: &Ctx, req: DescribeAclsRequest) -> DescribeAclsResponse {
    if let Some(e) = refused(ctx, Operation::Describe) {
        return DescribeAclsResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(sb(format!("{e:?}"))));
    }
    let filter = match filter_of(
        req.resource_type_filter,
        req.resource_name_filter.as_deref(),
        req.pattern_type_filter,
        req.principal_filter.as_deref(),
        req.host_filter.as_deref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(e) => {
            return DescribeAclsResponse::default()
                .with_error_code(code(e))
                .with_error_message(Some(sb("invalid ACL filter")))
        }
    };
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in ctx.broker.acls.describe(&filter) {
        by_resource
            .entry((b.resource.code(), b.name.clone(), b.pattern.code()))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(sb(b.principal))
                    .with_host(sb(b.host))
                    .with_operation(b.operation.code())
                    .with_permission_type(b.permission.code()),
            );
    }
    DescribeAclsResponse::default().with_resources(
        by_resource
            .into_iter()
            .map(|((t, name, p), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(t)
                    .with_resource_name(sb(name))
                    .with_pattern_type(p)
                    .with_acls(acls)
            })
            .collect(),
    )
}

/// Writes the ACL file, so it runs on the blocking pool.
pub fn delete(ctx: &Ctx, req: DeleteAclsRequest) -> DeleteAclsResponse {
    if let Some(e) = refused(ctx, Operation::Alter) {
        return DeleteAclsResponse::default().with_filter_results(
            req.filters
                .iter()
                .map(|_| DeleteAclsFilterResult::default().with_error_code(code(e)))
                .collect(),
        );
    }
    let filters: Vec<Result<Filter, ResponseError>> = req
        .filters
        .iter()
        .map(|f| {
            filter_of(
                f.resource_type_filter,
                f.resource_name_filter.as_deref(),
                f.pattern_type_filter,
                f.principal_filter.as_deref(),
                f.host_filter.as_deref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<Filter> = filters
        .iter()
        .filter_map(|f| f.as_ref().ok().cloned())
        .collect();
    let removed = ctx.broker.acls.delete(&valid);
    let mut removed_iter = match &removed {
        Ok(r) => r.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let results = filters
        .into_iter()
        .map(|f| match (f, &removed) {
            (Err(e), _) => DeleteAclsFilterResult::default().with_error_code(code(e)),
            (Ok(_), Err(e)) => DeleteAclsFilterResult::default()
                .with_error_code(code(ResponseError::UnknownServerError))
                .with_error_message(Some(sb(e.to_string()))),
            (Ok(_), Ok(_)) => DeleteAclsFilterResult::default().with_matching_acls(
                removed_iter
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| {
                        tracing::info!(principal = %ctx.principal, acl = ?b, "ACL deleted");
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource.code())
                            .with_resource_name(sb(b.name))
                            .with_pattern_type(b.pattern.code())
                            .with_principal(sb(b.principal))
                            .with_host(sb(b.host))
                            .with_operation(b.operation.code())
                            .with_permission_type(b.permission.code())
                    })
                    .collect(),
            ),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

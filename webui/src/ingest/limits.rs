//! The sending-limit and reschedule requests of the ingest client.

use jetmail_common::api::{self, ControlAction, LimitList, LimitRequest, LimitView};
use jetmail_common::limits::Scope;
use reqwest::Method;

use super::{IngestClient, IngestError, Payload, QUICK_TIMEOUT};

impl IngestClient {
    /// Every limit with its configured and effective rate.
    pub async fn limits(&self) -> Result<LimitList, IngestError> {
        let b = self
            .call(
                Method::GET,
                api::route::LIMITS,
                Payload::Empty,
                &[],
                QUICK_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }

    /// Sets the limit of `scope`; ingest refuses a body that describes another scope.
    pub async fn set_limit(
        &self,
        scope: &Scope,
        req: &LimitRequest,
    ) -> Result<LimitView, IngestError> {
        let b = self
            .call(
                Method::PUT,
                &api::path::limit(scope),
                Payload::json(req),
                &[],
                QUICK_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }

    pub async fn remove_limit(&self, scope: &Scope) -> Result<(), IngestError> {
        self.call(
            Method::DELETE,
            &api::path::limit(scope),
            Payload::Empty,
            &[],
            QUICK_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// A new send-at for a campaign that has not started.
    pub async fn reschedule(&self, campaign: &str, send_at: &str) -> Result<(), IngestError> {
        let body = api::RescheduleRequest {
            send_at: send_at.to_string(),
        };
        self.call(
            Method::POST,
            &api::path::control(campaign, ControlAction::Reschedule),
            Payload::json(&body),
            &[],
            QUICK_TIMEOUT,
        )
        .await
        .map(|_| ())
    }
}

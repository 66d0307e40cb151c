//! The suppression-list and test-send requests of the ingest client (`/v1/suppressions`,
//! `POST /v1/campaigns/test`).

use bytes::Bytes;
use jetmail_common::api::{
    self, SuppressReport, SuppressRequest, SuppressionList, SuppressionQuery, TestSendReport,
};
use jetmail_common::compliance::SuppressionReason;
use reqwest::Method;

use super::{
    CampaignForm, IngestClient, IngestError, Payload, BULK_TIMEOUT, QUICK_TIMEOUT, SUBMIT_TIMEOUT,
};

impl IngestClient {
    /// The first entries matching `query`, by address, and how many match.
    pub async fn suppressions(
        &self,
        query: &SuppressionQuery,
    ) -> Result<SuppressionList, IngestError> {
        let b = self
            .call(
                Method::GET,
                &query.path(),
                Payload::Empty,
                &[],
                QUICK_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }

    /// Suppresses `addresses`; one already on the list keeps its first entry.
    pub async fn suppress(
        &self,
        addresses: Vec<String>,
        reason: SuppressionReason,
    ) -> Result<SuppressReport, IngestError> {
        let req = SuppressRequest {
            addresses,
            reason: Some(reason),
        };
        let b = self
            .call(
                Method::POST,
                api::route::SUPPRESSIONS,
                Payload::json(&req),
                &[],
                QUICK_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }

    /// Takes `address` off the list; ingest answers `not_found` when it was not on it.
    pub async fn unsuppress(&self, address: &str) -> Result<(), IngestError> {
        self.call(
            Method::DELETE,
            &api::suppression_path(address),
            Payload::Empty,
            &[],
            QUICK_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// Imports a CSV file (an `email` column, an optional `reason` column) or bare addresses
    /// one a line; rows without a reason get `default_reason`. Rejected rows carry ingest's
    /// own line numbers.
    pub async fn import_suppressions(
        &self,
        csv: Bytes,
        default_reason: SuppressionReason,
    ) -> Result<SuppressReport, IngestError> {
        let path = format!(
            "{}?reason={}",
            api::route::SUPPRESSIONS_IMPORT,
            default_reason.as_str()
        );
        let b = self
            .call(
                Method::POST,
                &path,
                Payload::Raw("text/csv", csv),
                &[],
                BULK_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }

    /// Sends `form`'s campaign once to each of `to` (at most [`api::TEST_SEND_MAX`]), as a
    /// test that no campaign list shows or counts.
    pub async fn test_send(
        &self,
        form: &CampaignForm,
        to: &[String],
    ) -> Result<TestSendReport, IngestError> {
        let b = self
            .call(
                Method::POST,
                &api::test_send_path(to),
                Payload::Multipart(form.multipart()),
                &[],
                // Ingest reads the recipients only up to the first valid row, but the upload
                // itself may be large.
                SUBMIT_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }
}

//! The media worker: one thread owning one [`MediaEngine`] (speech recognition, speech
//! synthesis or image classification), taking requests one at a time from a bounded queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use kiln_core::{
    ErrorKind, KilnError, KilnResult, MediaEngine, MediaOutput, MediaRequest, Task, WorkProgress,
};
use tokio::sync::oneshot;

use crate::{isolated, rebuilt, Admission, AdmissionConfig, Rebuild};

struct MediaJob {
    request: MediaRequest,
    deadline: Instant,
    reply: oneshot::Sender<KilnResult<MediaOutput>>,
}

#[derive(Clone)]
pub struct MediaWorker {
    jobs: mpsc::SyncSender<MediaJob>,
    in_flight: Arc<AtomicUsize>,
    config: AdmissionConfig,
    task: Task,
}

impl MediaWorker {
    pub fn spawn(
        name: &str,
        engine: Box<dyn MediaEngine>,
        config: AdmissionConfig,
    ) -> KilnResult<Self> {
        Self::spawn_rebuildable(name, engine, None, config)
    }

    /// [`spawn`](Self::spawn), with a way to reload the model after the engine panicked.
    pub fn spawn_rebuildable(
        name: &str,
        mut engine: Box<dyn MediaEngine>,
        rebuild: Option<Rebuild<Box<dyn MediaEngine>>>,
        config: AdmissionConfig,
    ) -> KilnResult<Self> {
        let (jobs, queue) = mpsc::sync_channel::<MediaJob>(config.queue_capacity);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let task = engine.task();
        let counter = in_flight.clone();
        let model = name.to_owned();
        thread::Builder::new()
            .name(format!("media-{name}"))
            .spawn(move || {
                while let Ok(MediaJob {
                    request,
                    deadline,
                    reply,
                }) = queue.recv()
                {
                    // A caller that left or ran out of time gets no work done for it.
                    let result = if reply.is_closed() {
                        None
                    } else if deadline <= Instant::now() {
                        Some(Err(timeout()))
                    } else {
                        // Long work stops between chunks once the caller is gone or late.
                        let progress = WorkProgress::new(deadline, || reply.is_closed());
                        let outcome = isolated(&model, || engine.run(request, &progress));
                        drop(progress);
                        match outcome {
                            Ok(result) => Some(result),
                            Err(panicked) => {
                                engine = rebuilt(&model, engine, rebuild.as_ref());
                                Some(Err(panicked))
                            }
                        }
                    };
                    // Not busy before the answer leaves: a caller that has its answer never
                    // sees its own request still counted.
                    counter.fetch_sub(1, Ordering::SeqCst);
                    if let Some(result) = result {
                        let _ = reply.send(result);
                    }
                }
            })
            .map_err(|e| KilnError::internal(format!("cannot start worker thread: {e}")))?;
        Ok(Self {
            jobs,
            in_flight,
            config,
            task,
        })
    }

    pub fn task(&self) -> Task {
        self.task
    }

    /// Whether any request is queued or running (an idle model may be unloaded).
    pub fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    pub async fn run(
        &self,
        request: MediaRequest,
        admission: Admission,
    ) -> KilnResult<MediaOutput> {
        crate::submit_and_wait(
            &self.jobs,
            &self.in_flight,
            &self.config,
            admission,
            |deadline, reply| MediaJob {
                request,
                deadline,
                reply,
            },
        )
        .await
    }
}

fn timeout() -> KilnError {
    KilnError::new(ErrorKind::Timeout, ErrorKind::Timeout.default_message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::media::LabelScore;

    /// Answers with the image's length as a label, after `delay`.
    struct Echo(std::time::Duration);

    impl MediaEngine for Echo {
        fn task(&self) -> Task {
            Task::ImageClassification
        }
        fn run(&mut self, request: MediaRequest, _: &WorkProgress) -> KilnResult<MediaOutput> {
            std::thread::sleep(self.0);
            match request {
                MediaRequest::Classify { image, .. } => Ok(MediaOutput::Labels(vec![LabelScore {
                    label: image.len().to_string(),
                    score: 1.0,
                }])),
                _ => Err(KilnError::bad_input("only images")),
            }
        }
    }

    #[tokio::test]
    async fn runs_requests_and_refuses_when_busy() {
        let worker = MediaWorker::spawn(
            "echo",
            Box::new(Echo(std::time::Duration::from_millis(100))),
            AdmissionConfig::default(),
        )
        .unwrap();
        assert_eq!(worker.task(), Task::ImageClassification);
        let classify = || MediaRequest::Classify {
            image: vec![0; 3],
            top_k: 1,
        };
        let first = worker.run(classify(), Admission::default());
        let busy = async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let admission = Admission {
                reject_if_busy: true,
                deadline: None,
            };
            worker.run(classify(), admission).await
        };
        let (first, busy) = tokio::join!(first, busy);
        assert!(matches!(first, Ok(MediaOutput::Labels(ref l)) if l[0].label == "3"));
        assert_eq!(busy.unwrap_err().code(), 3040);
        let wrong = worker
            .run(
                MediaRequest::Speak {
                    text: "x".into(),
                    format: kiln_core::media::AudioFormat::Wav,
                    sample_rate: None,
                },
                Admission::default(),
            )
            .await;
        assert_eq!(wrong.unwrap_err().code(), 5006);
        assert!(!worker.is_busy());
    }
}

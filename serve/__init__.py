"""The HTTP inference service on Ray Serve: a FastAPI ingress bound to a detector deployment
(``@serve.batch``) and a SAM deployment.

It serves a pipeline run's trained detector (``runs/demo`` by default: run ``make demo``
first) and the committed demo SAM. Run it:

- ``python -m serve [--port 8000] [--config configs/serve_app.yaml] [--run runs/<name>]`` —
  a private local Ray instance, HTTP on 127.0.0.1, until SIGINT/SIGTERM;
- ``serve run -a local configs/serve.yaml`` or ``serve deploy configs/serve.yaml`` — Ray
  Serve's own CLI, through the builder ``serve.app:build``.

Endpoints (OpenAPI at ``/openapi.json``, browsable at ``/docs``):

- ``POST /v1/detect`` — boxes, classes, scores, optional masks (RLE or polygons), optional
  PNG overlay (base64 in JSON, or ``image/png`` with ``response_format=png`` or
  ``Accept: image/png``);
- ``POST /v1/segment`` — SAM masks for point and/or box prompts;
- ``POST /v1/proposals`` — WeakSAM proposals (grid + optional peak points with classes);
- ``GET /healthz`` (liveness), ``GET /readyz`` (models answer), ``GET /v1/models``.

Images come as ``multipart/form-data`` (an ``image`` file part) or JSON (``image`` in
base64 or as a data URL). Modules: ``config`` (ServeConfig), ``schemas`` (pydantic bodies),
``validation`` (pure request checks), ``models`` (Detector protocol, results), ``detectors`` /
``segmenter`` (model adapters), ``render`` (responses, overlays), ``api`` (the FastAPI app),
``middleware`` (body limit, catch-all 500), ``openapi`` (the document), ``backend``
(local models or Ray handles), ``deployments`` (Ray Serve classes), ``app`` (builders).

Detectors (all built and loaded by ``weaksam.detection`` / ``weaksam.wsod``): ``detector.kind``
``run`` (a run's ``wsis`` Mask R-CNN, else its ``retrain`` Faster R-CNN; the default, on
``runs/demo``), ``retrain`` (such a ``model.pt`` by path), ``wsod`` (on SAM proposals) or
``untrained`` (random weights, only when asked for; ``/v1/models`` says so).
"""

// The notification-service seed's instrumentation in miniature, loaded with
// `node --require ./instrument.js app.js`: the Node SDK with every auto-instrumentation
// of auto-instrumentations-node, exporting OTLP/HTTP JSON (exporter-trace-otlp-http, the
// JSON exporter; endpoint and service name from the standard OTEL_* variables), plus a
// span processor that writes every ended span to $SEED_TRUTH, the truth the tests
// compare against.
'use strict';
const fs = require('fs');
const { NodeSDK, tracing } = require('@opentelemetry/sdk-node');
const { getNodeAutoInstrumentations } = require('@opentelemetry/auto-instrumentations-node');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');

const truth = fs.openSync(process.env.SEED_TRUTH, 'w');
const ns = ([s, n]) => BigInt(s) * 1000000000n + BigInt(n);
const truthProcessor = {
  onStart() {},
  onEnd(span) {
    const line = JSON.stringify({
      service: span.resource.attributes['service.name'],
      kind: ['INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'][span.kind],
      start_ns: ns(span.startTime).toString(),
      end_ns: ns(span.endTime).toString(),
      error: span.status.code === 2,
    });
    fs.writeSync(truth, line + '\n');
  },
  forceFlush() { return Promise.resolve(); },
  shutdown() { return Promise.resolve(); },
};

const sdk = new NodeSDK({
  spanProcessors: [new tracing.BatchSpanProcessor(new OTLPTraceExporter()), truthProcessor],
  instrumentations: [getNodeAutoInstrumentations({
    '@opentelemetry/instrumentation-fs': { enabled: false },
  })],
});
sdk.start();
process.on('SIGTERM', () => {
  sdk.shutdown().finally(() => process.exit(0));
});

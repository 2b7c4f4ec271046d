// The api-gateway seed's instrumentation in miniature: a net/http server wrapped in
// otelhttp, the Go SDK exporting OTLP/gRPC (endpoint and service name from the standard
// OTEL_* variables), and every span also written by the stdout exporter to $SEED_TRUTH,
// the truth the tests compare against.
//
// GET /work?ms=N&status=S sleeps N milliseconds and answers S.
package main

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func work(w http.ResponseWriter, r *http.Request) {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	status, err := strconv.Atoi(r.URL.Query().Get("status"))
	if err != nil {
		status = http.StatusOK
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	w.WriteHeader(status)
}

func main() {
	ctx := context.Background()
	otlp, err := otlptracegrpc.New(ctx)
	if err != nil {
		log.Fatal(err)
	}
	file, err := os.Create(os.Getenv("SEED_TRUTH"))
	if err != nil {
		log.Fatal(err)
	}
	truth, err := stdouttrace.New(stdouttrace.WithWriter(file))
	if err != nil {
		log.Fatal(err)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		log.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(otlp),
		sdktrace.WithSyncer(truth),
		sdktrace.WithResource(res),
	)
	otel.SetTracerProvider(tp)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /work", work)
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: otelhttp.NewHandler(mux, "server")}
	go func() {
		if err := srv.ListenAndServe(); err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
	_ = srv.Shutdown(ctx)
	if err := tp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	_ = file.Close()
}

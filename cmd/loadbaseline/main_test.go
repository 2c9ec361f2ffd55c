package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

func TestBaselineDecodes(t *testing.T) {
	data, err := os.ReadFile("../../testdata/kap/16-dosing-c001-1.json")
	if err != nil {
		t.Fatal(err)
	}
	h := handler()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/kap/v1/dosing-sessions", strings.NewReader(string(data))))
	if w.Code != http.StatusCreated || !strings.Contains(w.Body.String(), `"id":"ds-c001-1"`) {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/kap/v1/dosing-sessions", strings.NewReader("{")))
	if w.Code != http.StatusBadRequest {
		t.Fatalf("malformed: status %d", w.Code)
	}
}

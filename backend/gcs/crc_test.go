package gcs_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/gcs"
)

// A one-request upload carries its CRC32C in the object's metadata, so GCS checks the body
// before it commits it (the client's own check runs after the answer, too late to keep the
// previous object).
func TestOneRequestUploadSendsCRC32C(t *testing.T) {
	data := []byte("the blob's bytes, whole")
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
	want := base64.StdEncoding.EncodeToString(sum[:])

	var mu sync.Mutex
	var meta map[string]any
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if r.Method != http.MethodPost || r.URL.Query().Get("uploadType") != "multipart" || err != nil {
			http.Error(w, "want a multipart upload", http.StatusBadRequest)
			return
		}
		mr := multipart.NewReader(r.Body, params["boundary"])
		part, err := mr.NextPart()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if err := json.NewDecoder(part).Decode(&meta); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if part, err = mr.NextPart(); err == nil {
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(part)
			body = buf.Bytes()
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"bucket":"images","name":%q,"size":"%d","crc32c":%q}`, meta["name"], len(data), want)
	}))
	t.Cleanup(srv.Close)

	b := newBackend(t, gcs.Config{Bucket: "images", Endpoint: srv.URL})
	require.NoError(t, b.Upload(t.Context(), "library/ubuntu", "abc", bytes.NewReader(data), int64(len(data))))
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, want, meta["crc32c"], "the request's metadata carries the body's CRC32C")
	require.Equal(t, data, body)
}

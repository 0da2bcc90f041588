package s3

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/krakenctl/krakenctl/backend"
)

// deleter is the call Delete needs; the SDK's client has it. It is asserted rather than part
// of api so the read paths' test doubles need not implement it.
type deleter interface {
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, opts ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// Delete implements backend.Deleter. S3 answers a delete of a missing key with success, so the
// object is looked up first to report ErrNotFound as the contract asks; a delete racing
// another is harmless (both end with the object gone).
func (b *Backend) Delete(ctx context.Context, namespace, name string) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("delete %s/%s: %w", namespace, name, err)
	}
	d, ok := b.api.(deleter)
	if !ok {
		return fmt.Errorf("delete %s/%s: %w", namespace, name, errors.ErrUnsupported)
	}
	if _, err := b.Stat(ctx, namespace, name); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	_, err := d.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(b.bucket),
		Key:    aws.String(b.dir(namespace) + name),
	})
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", namespace, name, b.mapErr(ctx, err))
	}
	return nil
}

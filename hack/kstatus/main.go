// Command kstatus prints what the kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus),
// which Flux, kpt, Config Sync and cli-utils use to wait for applied objects, computes
// for each object of a `kubectl get -o json` document read from stdin (one object or a
// List): one line "<name> <status> <message>" per object.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	// Numbers decode as int64 where whole, as the API machinery expects.
	"k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var doc map[string]interface{}
	if err := json.Unmarshal(raw, &doc); err != nil {
		fail(err)
	}
	items := []interface{}{doc}
	if list, ok := doc["items"].([]interface{}); ok {
		items = list
	}
	for _, item := range items {
		obj, ok := item.(map[string]interface{})
		if !ok {
			fail(fmt.Errorf("not an object: %v", item))
		}
		u := &unstructured.Unstructured{Object: obj}
		res, err := status.Compute(u)
		if err != nil {
			fail(err)
		}
		fmt.Printf("%s %s %s\n", u.GetName(), res.Status, res.Message)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(2)
}

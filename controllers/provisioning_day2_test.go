package controllers

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

func TestSnapshotDue(t *testing.T) {
	created := time.Date(2026, 11, 26, 10, 7, 0, 0, time.UTC)
	at := func(h, m int) time.Time { return time.Date(2026, 11, 26, h, m, 0, 0, time.UTC) }
	snap := func(tm time.Time) []v1alpha1.EtcdSnapshot {
		t := metav1.NewTime(tm)
		return []v1alpha1.EtcdSnapshot{{Name: "s", CreatedAt: &t}}
	}
	for _, tc := range []struct {
		name      string
		schedule  string
		snapshots []v1alpha1.EtcdSnapshot
		now       time.Time
		due       bool
		next      time.Time
		err       string
	}{
		{"not yet", "0 */6 * * *", nil, at(11, 0), false, at(12, 0), ""},
		{"due since the first slot after creation", "0 */6 * * *", nil, at(12, 1), true, at(18, 0), ""},
		{"taken", "0 */6 * * *", snap(at(12, 1)), at(13, 0), false, at(18, 0), ""},
		{"missed several: one now", "@hourly", snap(at(11, 0)), at(15, 30), true, at(16, 0), ""},
		{"bad", "61 * * * *", nil, at(11, 0), false, time.Time{}, "spec.provisioning.etcdSnapshotSchedule"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			due, next, err := snapshotDue(tc.schedule, created, tc.snapshots, tc.now)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v", err)
				}
				return
			}
			if err != nil || due != tc.due || !next.Equal(tc.next) {
				t.Fatalf("due %v next %v err %v; want %v %v", due, next, err, tc.due, tc.next)
			}
		})
	}
}

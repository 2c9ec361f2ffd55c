package ehr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/kapbridge/kap"
)

// Capability is what the target's CapabilityStatement (GET [base]/metadata)
// says about writes.
type Capability struct {
	// Known is false when the target publishes no CapabilityStatement: the
	// gateway then uses the most conservative strategy (search, then
	// create or update by id).
	Known       bool               `json:"known"`
	Transaction bool               `json:"transaction"`
	Types       map[string]TypeCap `json:"types,omitempty"`
}

// TypeCap is what a target supports for one resource type.
type TypeCap struct {
	Create            bool `json:"create,omitempty"`
	Update            bool `json:"update,omitempty"`
	Search            bool `json:"search,omitempty"`
	ConditionalCreate bool `json:"conditionalCreate,omitempty"`
	ConditionalUpdate bool `json:"conditionalUpdate,omitempty"`
}

// ParseCapability reads the write capabilities of a CapabilityStatement.
func ParseCapability(b []byte) (Capability, error) {
	var cs struct {
		ResourceType string `json:"resourceType"`
		Rest         []struct {
			Mode        string `json:"mode"`
			Interaction []struct {
				Code string `json:"code"`
			} `json:"interaction"`
			Resource []struct {
				Type        string `json:"type"`
				Interaction []struct {
					Code string `json:"code"`
				} `json:"interaction"`
				ConditionalCreate bool `json:"conditionalCreate"`
				ConditionalUpdate bool `json:"conditionalUpdate"`
			} `json:"resource"`
		} `json:"rest"`
	}
	if err := json.Unmarshal(b, &cs); err != nil {
		return Capability{}, fmt.Errorf("CapabilityStatement: %w", err)
	}
	if cs.ResourceType != "CapabilityStatement" {
		return Capability{}, fmt.Errorf("metadata answered a %q, not a CapabilityStatement", cs.ResourceType)
	}
	c := Capability{Known: true, Types: map[string]TypeCap{}}
	for _, r := range cs.Rest {
		if r.Mode != "" && r.Mode != "server" {
			continue
		}
		for _, i := range r.Interaction {
			if i.Code == "transaction" {
				c.Transaction = true
			}
		}
		for _, res := range r.Resource {
			t := TypeCap{ConditionalCreate: res.ConditionalCreate, ConditionalUpdate: res.ConditionalUpdate}
			for _, i := range res.Interaction {
				switch i.Code {
				case "create":
					t.Create = true
				case "update":
					t.Update = true
				case "search-type":
					t.Search = true
				}
			}
			c.Types[res.Type] = t
		}
	}
	return c, nil
}

// filter is the capFilter of makePlan.
func (c Capability) filter() capFilter {
	if !c.Known {
		return nil
	}
	return func(typ string) (bool, string) {
		t, ok := c.Types[typ]
		if !ok {
			return false, fmt.Sprintf("the target's CapabilityStatement lists no %s", typ)
		}
		if !t.Create && !t.Update {
			return false, fmt.Sprintf("the target's CapabilityStatement lists no create or update of %s", typ)
		}
		return true, ""
	}
}

// memCache is the capability cache used when Options.Cache is nil.
type memCache struct {
	mu  sync.Mutex
	val []byte
	exp time.Time
}

func (s *Sender) capabilityKey() string { return "ehr:capability:" + s.name }

// capability returns the target's capabilities, from the cache or
// GET [base]/metadata.
func (s *Sender) capability(ctx context.Context) (Capability, error) {
	var cached []byte
	if s.cache != nil {
		if b, err := s.cache.Get(ctx, s.capabilityKey()); err == nil {
			cached = b
		} else if kap.ErrorCode(err) != kap.ENOTFOUND {
			s.log.WarnContext(ctx, "capability cache read failed", "target", s.name, "error", err)
		}
	} else {
		s.mem.mu.Lock()
		if s.now().Before(s.mem.exp) {
			cached = s.mem.val
		}
		s.mem.mu.Unlock()
	}
	if cached != nil {
		var c Capability
		if json.Unmarshal(cached, &c) == nil {
			return c, nil
		}
	}
	c, err := s.discover(ctx)
	if err != nil {
		return Capability{}, err
	}
	b, _ := json.Marshal(c)
	if s.cache != nil {
		if err := s.cache.Set(ctx, s.capabilityKey(), b, s.capTTL); err != nil {
			s.log.WarnContext(ctx, "capability cache write failed", "target", s.name, "error", err)
		}
	} else {
		s.mem.mu.Lock()
		s.mem.val, s.mem.exp = b, s.now().Add(s.capTTL)
		s.mem.mu.Unlock()
	}
	return c, nil
}

// forgetCapability drops the cached capabilities (the target refused an
// interaction it claimed).
func (s *Sender) forgetCapability(ctx context.Context) {
	if s.cache != nil {
		_ = s.cache.Delete(ctx, s.capabilityKey())
		return
	}
	s.mem.mu.Lock()
	s.mem.exp = time.Time{}
	s.mem.mu.Unlock()
}

func (s *Sender) discover(ctx context.Context) (Capability, error) {
	resp, err := s.do(ctx, http.MethodGet, "metadata", nil, nil)
	if err != nil {
		return Capability{}, &kap.SendError{Kind: kap.SendTransient, Err: fmt.Errorf("capability discovery: %w", err)}
	}
	switch {
	case resp.Status == http.StatusOK:
		c, err := ParseCapability(resp.Body)
		if err != nil {
			s.log.WarnContext(ctx, "unreadable CapabilityStatement; using the conservative strategy", "target", s.name, "error", err)
			return Capability{}, nil
		}
		s.log.InfoContext(ctx, "target capabilities discovered", "target", s.name, "transaction", c.Transaction, "types", len(c.Types))
		return c, nil
	case resp.Status == http.StatusNotFound || resp.Status == http.StatusNotImplemented || resp.Status == http.StatusMethodNotAllowed:
		s.log.InfoContext(ctx, "target publishes no CapabilityStatement; using the conservative strategy", "target", s.name, "status", resp.Status)
		return Capability{}, nil
	}
	se := s.statusError(resp)
	if se.Kind == kap.SendPermanent && resp.Status != http.StatusForbidden {
		// Another 4xx on metadata says nothing about writes.
		return Capability{}, nil
	}
	se.Err = errors.Join(errors.New("capability discovery"), se.Err)
	return Capability{}, se
}

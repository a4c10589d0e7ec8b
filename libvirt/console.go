package libvirt

import (
	"context"
	"errors"
	"io"

	golibvirt "github.com/digitalocean/go-libvirt"
)

// Console copies the output of a running domain's console (its first serial
// port, which must be a pty, as BootKernel makes it) to w until the domain
// stops, ctx ends or the connection is lost. It is read-only: go-libvirt's
// console stream carries no input. The stream runs on a connection of its
// own, closed on return, so that ending it early does not disturb c.
func (c *Conn) Console(ctx context.Context, ref string, w io.Writer) error {
	d, err := c.lookup(ctx, "open console of domain", ref)
	if err != nil {
		return err
	}
	if st, err := c.state(ctx, d); err != nil {
		return err
	} else if !st.Active() {
		return &Error{Op: "open console of domain", URI: c.uri.String(), Domain: d.Name,
			Err: errors.New("domain is not running")}
	}
	sc, err := DialURI(ctx, c.uri, c.opts)
	if err != nil {
		return err
	}
	defer sc.Close()
	done := make(chan error, 1)
	go func() {
		done <- sc.lv.DomainOpenConsole(d, nil, w, uint32(golibvirt.DomainConsoleForce))
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		sc.nc.Close()
		<-done
		return nil
	}
	if err != nil {
		return sc.wrap("console of domain", d.Name, err)
	}
	return nil
}
